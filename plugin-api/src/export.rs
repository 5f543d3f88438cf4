//! What [`crate::export_plugin!`] expands to: adapters from the author-facing
//! traits to the ABI objects, each call wrapped so a panic or a bad JSON
//! context becomes an error instead of crossing the boundary.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, RResult, RStr, RString, RVec},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::abi::*;
use crate::{LoginRequest, PluginResult, RepositoryRef};

thread_local! {
    /// Set while a guarded call runs on this thread: its panics become errors.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// Where the last guarded panic happened, for the error message.
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Each plugin library has its own standard library and so its own panic hook.
/// Ours stays quiet for guarded calls (the error carries the message, so the
/// server's log gets one line, not a backtrace) and defers to the default
/// hook for panics on the plugin's own threads.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                default(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into an error that names it.
pub fn guard<T>(what: &str, f: impl FnOnce() -> PluginResult<T>) -> RResult<T, RString> {
    install_quiet_hook();
    let outer = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    match result {
        Ok(Ok(v)) => ROk(v),
        Ok(Err(e)) => RErr(e.into()),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            let at = PANIC_AT.with(|p| p.borrow_mut().take()).map(|a| format!(" (at {a})")).unwrap_or_default();
            RErr(format!("plugin panicked in {what}: {msg}{at}").into())
        }
    }
}

fn parse<T: DeserializeOwned>(what: &str, json: RStr<'_>) -> PluginResult<T> {
    serde_json::from_str(json.as_str()).map_err(|e| format!("invalid {what} JSON from the host: {e}"))
}

fn config(json: RStr<'_>) -> PluginResult<Value> {
    if json.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    parse("configuration", json)
}

/// Builds the [`PluginInfo`] answered by a library's `info` function.
pub fn info(name: &str, version: &str, description: &str, kinds: &[&str]) -> PluginInfo {
    PluginInfo {
        name: name.into(),
        version: version.into(),
        description: description.into(),
        interface_version: INTERFACE_VERSION.into(),
        kinds: kinds.iter().map(|k| RString::from(*k)).collect(),
    }
}

/// Guards a plugin's `info` function.
pub fn info_guarded(f: impl FnOnce() -> PluginInfo) -> PluginInfo {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| info("<panicked>", "0.0.0", "the plugin's info function panicked", &[]))
}

/// Adapter from an author trait to its ABI trait.
pub struct Adapter<T>(pub T);

macro_rules! ctor {
    ($fn_name:ident, $author:path, $boxed:ty, $to:ident) => {
        /// Constructor exported for this kind.
        pub extern "C" fn $fn_name<T: $author>(cfg: RStr<'_>) -> RResult<$boxed, RString> {
            guard("new", || {
                let cfg = config(cfg)?;
                let value = <T as $author>::new(&cfg)?;
                Ok($to::from_value(Adapter(value), TD_Opaque))
            })
        }
    };
}

ctor!(new_trigger, crate::Trigger, TriggerBox, TriggerAbi_TO);
ctor!(new_scm, crate::Scm, ScmBox, ScmAbi_TO);
ctor!(new_isolation, crate::Isolation, IsolationBox, IsolationAbi_TO);
ctor!(new_output, crate::Output, OutputBox, OutputAbi_TO);
ctor!(new_authorization, crate::Authorization, AuthorizationBox, AuthorizationAbi_TO);
ctor!(new_organization, crate::Organization, OrganizationBox, OrganizationAbi_TO);
ctor!(new_variables, crate::Variables, VariablesBox, VariablesAbi_TO);
ctor!(new_secrets, crate::Secrets, SecretsBox, SecretsAbi_TO);
ctor!(new_autoscaler, crate::Autoscaler, AutoscalerBox, AutoscalerAbi_TO);
ctor!(new_authentication, crate::Authentication, AuthenticationBox, AuthenticationAbi_TO);

impl<T: crate::Trigger> TriggerAbi for Adapter<T> {
    fn execute(&self, context: RStr<'_>, host: &Host<'_>) -> RResult<(), RString> {
        guard("execute", || self.0.execute(&parse("trigger context", context)?, host))
    }
}

impl<T: crate::Scm> ScmAbi for Adapter<T> {
    fn checkout(&self, context: RStr<'_>, host: &Host<'_>) -> RResult<RString, RString> {
        guard("checkout", || {
            let result = self.0.checkout(&parse("scm context", context)?, host)?;
            serde_json::to_string(&result).map(RString::from).map_err(|e| e.to_string())
        })
    }
}

impl<T: crate::Isolation> IsolationAbi for Adapter<T> {
    fn execute(&self, context: RStr<'_>, host: &Host<'_>) -> RResult<i32, RString> {
        guard("execute", || self.0.execute(&parse("isolation context", context)?, host))
    }
}

impl<T: crate::Output> OutputAbi for Adapter<T> {
    fn filter(&self, info: BatchInfo, lines: RVec<OutputLine>) -> RResult<RVec<OutputLine>, RString> {
        guard("filter", move || {
            let mut lines = lines;
            self.0.filter(&info, &mut lines)?;
            Ok(lines)
        })
    }

    fn build_finished(&self, info: BatchInfo) -> RResult<(), RString> {
        guard("build_finished", || self.0.build_finished(&info))
    }
}

impl<T: crate::Autoscaler> AutoscalerAbi for Adapter<T> {
    fn plan(&self, status: RStr<'_>) -> RResult<RString, RString> {
        guard("plan", || {
            let plan = self.0.plan(&parse("pool status", status)?)?;
            serde_json::to_string(&plan).map(RString::from).map_err(|e| e.to_string())
        })
    }

    fn scale(&self, status: RStr<'_>, plan: RStr<'_>, host: &Host<'_>) -> RResult<(), RString> {
        guard("scale", || self.0.scale(&parse("pool status", status)?, &parse("scale plan", plan)?, host))
    }
}

impl<T: crate::Authentication> AuthenticationAbi for Adapter<T> {
    fn authenticate(&self, request: RStr<'_>, password: RStr<'_>) -> RResult<RString, RString> {
        guard("authenticate", || {
            let request: LoginRequest = parse("login request", request)?;
            let verdict = self.0.authenticate(&request, password.as_str())?;
            serde_json::to_string(&verdict).map(RString::from).map_err(|e| e.to_string())
        })
    }
}

impl<T: crate::Authorization> AuthorizationAbi for Adapter<T> {
    fn check(&self, request: RStr<'_>) -> RResult<bool, RString> {
        guard("check", || self.0.check(&parse("access request", request)?))
    }

    fn filter_list(&self, request: RStr<'_>, candidates: RStr<'_>) -> RResult<RVec<i64>, RString> {
        guard("filter_list", || {
            let request = parse("access request", request)?;
            let candidates: Vec<Value> = parse("candidate list", candidates)?;
            Ok(self.0.filter_list(&request, &candidates)?.into())
        })
    }
}

impl<T: crate::Organization> OrganizationAbi for Adapter<T> {
    fn find_repos(&self, organization: RStr<'_>, host: &Host<'_>) -> RResult<RString, RString> {
        guard("find_repos", || {
            let repos = self.0.find_repos(&parse("organization", organization)?, host)?;
            serde_json::to_string(&repos).map(RString::from).map_err(|e| e.to_string())
        })
    }

    fn clone_repo(
        &self,
        organization: RStr<'_>,
        repository: RStr<'_>,
        dest: RStr<'_>,
        host: &Host<'_>,
    ) -> RResult<(), RString> {
        guard("clone_repo", || {
            let repo: RepositoryRef = parse("repository", repository)?;
            self.0.clone_repo(&parse("organization", organization)?, &repo, dest.as_str(), host)
        })
    }
}

impl<T: crate::Variables> VariablesAbi for Adapter<T> {
    fn compute(&self, context: RStr<'_>, existing: RStr<'_>) -> RResult<RString, RString> {
        guard("compute", || {
            let vars = self.0.compute(&parse("variables context", context)?, &parse("variables", existing)?)?;
            serde_json::to_string(&vars).map(RString::from).map_err(|e| e.to_string())
        })
    }
}

impl<T: crate::Secrets> SecretsAbi for Adapter<T> {
    fn recognizes(&self, stored: RStr<'_>) -> bool {
        guard("recognizes", || Ok(self.0.recognizes(stored.as_str()))).unwrap_or(false)
    }

    fn cloak(&self, plain: RStr<'_>) -> RResult<RString, RString> {
        guard("cloak", || self.0.cloak(plain.as_str()).map(Into::into))
    }

    fn decloak(&self, stored: RStr<'_>) -> RResult<RString, RString> {
        guard("decloak", || self.0.decloak(stored.as_str()).map(Into::into))
    }
}

/// Exports a plugin library: its info and a constructor for each kind it provides.
///
/// Kinds are named in interface order (trigger, scm, isolation, output,
/// authorization, organization, variables, secrets, autoscaler, authentication), each with the type that
/// implements the matching trait. The plugin's version is its crate version.
///
/// ```
/// # use vespene_plugin_api::{abi_stable::std_types::RVec, serde_json::Value};
/// # use vespene_plugin_api::{BatchInfo, Output, OutputLine, PluginResult};
/// # pub struct Timestamp;
/// # impl Output for Timestamp {
/// #     fn new(_: &Value) -> PluginResult<Self> { Ok(Timestamp) }
/// #     fn filter(&self, _: &BatchInfo, _: &mut RVec<OutputLine>) -> PluginResult<()> { Ok(()) }
/// # }
/// vespene_plugin_api::export_plugin! {
///     name: "timestamp",
///     description: "Prefixes output lines with the minutes since the build started",
///     output: Timestamp,
/// }
/// ```
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr,
        description: $description:expr
        $(, trigger: $trigger:ty)?
        $(, scm: $scm:ty)?
        $(, isolation: $isolation:ty)?
        $(, output: $output:ty)?
        $(, authorization: $authorization:ty)?
        $(, organization: $organization:ty)?
        $(, variables: $variables:ty)?
        $(, secrets: $secrets:ty)?
        $(, autoscaler: $autoscaler:ty)?
        $(, authentication: $authentication:ty)?
        $(,)?
    ) => {
        extern "C" fn __vespene_plugin_info() -> $crate::abi::PluginInfo {
            $crate::export::info_guarded(|| {
                let kinds: &[&str] = &[
                    $( $crate::export_plugin!(@kind "trigger" $trigger), )?
                    $( $crate::export_plugin!(@kind "scm" $scm), )?
                    $( $crate::export_plugin!(@kind "isolation" $isolation), )?
                    $( $crate::export_plugin!(@kind "output" $output), )?
                    $( $crate::export_plugin!(@kind "authorization" $authorization), )?
                    $( $crate::export_plugin!(@kind "organization" $organization), )?
                    $( $crate::export_plugin!(@kind "variables" $variables), )?
                    $( $crate::export_plugin!(@kind "secrets" $secrets), )?
                    $( $crate::export_plugin!(@kind "autoscaler" $autoscaler), )?
                    $( $crate::export_plugin!(@kind "authentication" $authentication), )?
                ];
                $crate::export::info($name, env!("CARGO_PKG_VERSION"), $description, kinds)
            })
        }

        fn __vespene_root_module() -> $crate::abi::PluginModuleRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::abi::PluginModule {
                info: __vespene_plugin_info,
                new_trigger: $crate::export_plugin!(@ctor new_trigger $($trigger)?),
                new_scm: $crate::export_plugin!(@ctor new_scm $($scm)?),
                new_isolation: $crate::export_plugin!(@ctor new_isolation $($isolation)?),
                new_output: $crate::export_plugin!(@ctor new_output $($output)?),
                new_authorization: $crate::export_plugin!(@ctor new_authorization $($authorization)?),
                new_organization: $crate::export_plugin!(@ctor new_organization $($organization)?),
                new_variables: $crate::export_plugin!(@ctor new_variables $($variables)?),
                new_secrets: $crate::export_plugin!(@ctor new_secrets $($secrets)?),
                new_autoscaler: $crate::export_plugin!(@ctor new_autoscaler $($autoscaler)?),
                new_authentication: $crate::export_plugin!(@ctor new_authentication $($authentication)?),
            }
            .leak_into_prefix()
        }

        /// The header `abi_stable` looks up when the server loads this library.
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::abi_stable::library::LibHeader = {
            extern "C" fn erased_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(__vespene_root_module)
            }
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::abi::PluginModuleRef>(
                    erased_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
    (@kind $name:literal $ty:ty) => { $name };
    (@ctor $ctor:ident) => { None };
    (@ctor $ctor:ident $ty:ty) => { Some($crate::export::$ctor::<$ty>) };
}
