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
    use vespene_plugin_api::testkit::{fake_build, fake_project, scm_from, to_json, RecordingHost};
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
        let scm = scm_from::<NoneScm>("{}").unwrap();
        let host = RecordingHost::new();

        let answer = scm
            .checkout(to_json(&context(&dir.path().to_string_lossy())).as_rstr(), &host.host())
            .into_result()
            .unwrap();

        let result: CheckoutResult = vespene_plugin_api::serde_json::from_str(answer.as_str()).unwrap();
        assert_eq!(result, CheckoutResult::default());
        assert_eq!(host.messages(), vec!["scm none: no checkout".to_string()]);
        assert!(host.outputs().is_empty());
        // Nothing was written into the work directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn accepts_no_parameters_in_every_spelling() {
        for config in ["", "{}", "null"] {
            assert!(scm_from::<NoneScm>(config).is_ok(), "config {config:?}");
        }
    }

    #[test]
    fn rejects_any_parameter_by_name() {
        let err = scm_from::<NoneScm>(r#"{"branch": "main"}"#).err().unwrap();
        assert_eq!(err, "unknown parameter 'branch' for scm plugin none: it takes none");
        let err = scm_from::<NoneScm>(r#"{"branch": "main", "url": "x"}"#).err().unwrap();
        assert_eq!(err, "unknown parameters 'branch', 'url' for scm plugin none: it takes none");
    }

    #[test]
    fn rejects_parameters_that_are_not_a_table() {
        let err = scm_from::<NoneScm>("[1]").err().unwrap();
        assert_eq!(err, "the parameters of scm plugin none must be a table, not [1]");
    }
}
