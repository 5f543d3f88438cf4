//! The `none` SCM plugin: for projects without a repository. It checks nothing
//! out, leaving the build's work directory empty, and reports no revision or
//! committer. It takes no parameters.

use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, CheckoutResult, Host, Kind, PluginResult, Scm, ScmContext};

/// The `none` SCM plugin.
#[derive(Debug, Default)]
pub struct NoneScm;

impl Scm for NoneScm {
    fn new(config: &Value) -> PluginResult<Self> {
        params::table(config, Kind::Scm, "none", &[])?;
        Ok(NoneScm)
    }

    fn checkout(&self, _context: &ScmContext, host: &Host<'_>) -> PluginResult<CheckoutResult> {
        // Say so in the log, so an empty work directory does not look like a failed checkout.
        host.message("scm none: no checkout");
        Ok(CheckoutResult::default())
    }
}

export_plugin! {
    name: "none",
    description: "SCM plugin that checks nothing out",
    scm: NoneScm,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, fake_build, fake_project, RecordingHost};
    use vespene_plugin_api::{CheckoutResult, ScmContext};

    use super::NoneScm;

    fn context(work_dir: &str) -> ScmContext {
        ScmContext {
            build: fake_build(),
            project: fake_project(),
            work_dir: work_dir.into(),
            repo_url: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn checkout_logs_one_message_and_reports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let scm = testkit::scm::<NoneScm>(json!({})).unwrap();
        let host = RecordingHost::new();

        let result = scm.checkout(&context(&dir.path().to_string_lossy()), &host).unwrap();

        assert_eq!(result, CheckoutResult::default());
        assert_eq!(host.messages(), vec!["scm none: no checkout".to_string()]);
        assert!(host.outputs().is_empty());
        // Nothing was written into the work directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn accepts_no_parameters_in_every_spelling() {
        for config in [Value::Null, json!({})] {
            assert!(testkit::scm::<NoneScm>(config.clone()).is_ok(), "config {config}");
        }
        // Raw on purpose: a host's text "null" reaches `new` as JSON null, and
        // the typed loader never sends that text (it sends null as "").
        assert!(testkit::scm_from::<NoneScm>("null").is_ok(), "config \"null\"");
    }

    #[test]
    fn rejects_any_parameter_by_name() {
        let err = testkit::scm::<NoneScm>(json!({"branch": "main"})).err().unwrap();
        assert_eq!(err, "unknown parameter 'branch' for scm plugin none: it takes none");
        let err = testkit::scm::<NoneScm>(json!({"branch": "main", "url": "x"})).err().unwrap();
        assert_eq!(err, "unknown parameters 'branch', 'url' for scm plugin none: it takes none");
    }

    #[test]
    fn rejects_parameters_that_are_not_a_table() {
        let err = testkit::scm::<NoneScm>(json!([1])).err().unwrap();
        assert_eq!(err, "the parameters of scm plugin none must be a table, not [1]");
    }
}
