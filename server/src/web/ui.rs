//! Server-rendered pages: minijinja templates built into the binary (no
//! front-end build step), autoescaped.

use std::sync::OnceLock;

use minijinja::Environment;
use serde::Serialize;

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("../../templates/base.html")),
            ("plugins.html", include_str!("../../templates/plugins.html")),
        ] {
            env.add_template(name, source).unwrap_or_else(|e| panic!("built-in template {name}: {e}"));
        }
        env
    })
}

/// Renders a built-in page.
pub fn render(name: &str, context: impl Serialize) -> Result<String, minijinja::Error> {
    templates().get_template(name)?.render(context)
}
