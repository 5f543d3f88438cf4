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

/// Builds the [`PluginInfo`] answered by a library's `info` function; the
/// kinds are listed in interface order, however the plugin named them.
pub fn info(name: &str, version: &str, description: &str, kinds: &[&str]) -> PluginInfo {
    let mut kinds = kinds.to_vec();
    kinds.sort_by_key(|k| crate::Kind::from_name(k));
    PluginInfo {
        name: name.into(),
        version: version.into(),
        description: description.into(),
        interface_version: INTERFACE_VERSION.into(),
        kinds: kinds.iter().map(|k| RString::from(*k)).collect(),
    }
}

/// A plugin's name from its library's crate name: `vespene_hello` (the file
/// `libvespene_hello.so`, settings' `library = "hello"`) is `hello`, and
/// `vespene_my_hook` is `my-hook` (settings may say either; the server reads
/// dashes as underscores when it looks for the file).
pub fn library_name(crate_name: &str) -> String {
    crate_name.strip_prefix("vespene_").unwrap_or(crate_name).replace('_', "-")
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

/// The plugin's name (a `&'static str`), from its library's crate name: in
/// a crate whose `[lib] name` is `vespene_hello` (the file
/// `libvespene_hello.so`, which settings name `library = "hello"`),
/// `plugin_name!()` is `"hello"`; underscores read as dashes
/// (`vespene_my_hook` is `my-hook`, as `vespene plugins new my-hook` names
/// it). It is the name [`export_plugin!`] gives the plugin unless told
/// otherwise, and the one to pass to [`crate::params::parse`].
#[macro_export]
macro_rules! plugin_name {
    () => {{
        static NAME: ::std::sync::OnceLock<::std::string::String> = ::std::sync::OnceLock::new();
        NAME.get_or_init(|| $crate::export::library_name(env!("CARGO_CRATE_NAME"))).as_str()
    }};
}

/// Exports a plugin library: its info and a constructor for each kind it provides.
///
/// `description` (one line saying what the plugin does) is required; each
/// kind it provides is named with the type that implements the matching
/// trait (`trigger`, `scm`, `isolation`, `output`, `authorization`,
/// `organization`, `variables`, `secrets`, `autoscaler`, `authentication`),
/// in any order. `name` is optional: it defaults to [`plugin_name!`], the
/// library's name. The plugin's version is its crate version.
///
/// ```
/// # use vespene_plugin_api::serde_json::Value;
/// # use vespene_plugin_api::{BatchInfo, Lines, Output, PluginResult, Trigger, TriggerContext, Host};
/// # pub struct Timestamp;
/// # impl Output for Timestamp {
/// #     fn new(_: &Value) -> PluginResult<Self> { Ok(Timestamp) }
/// #     fn filter(&self, _: &BatchInfo, _: &mut Lines) -> PluginResult<()> { Ok(()) }
/// # }
/// # pub struct Notify;
/// # impl Trigger for Notify {
/// #     fn new(_: &Value) -> PluginResult<Self> { Ok(Notify) }
/// #     fn execute(&self, _: &TriggerContext, _: &Host<'_>) -> PluginResult<()> { Ok(()) }
/// # }
/// vespene_plugin_api::export_plugin! {
///     description: "Prefixes output lines with the minutes since the build started",
///     output: Timestamp,
///     trigger: Notify,
/// }
/// ```
///
/// A kind named twice, or a name that is not a kind, does not compile:
///
/// ```compile_fail
/// # use vespene_plugin_api::serde_json::Value;
/// # use vespene_plugin_api::{Host, PluginResult, Trigger, TriggerContext};
/// # pub struct Notify;
/// # impl Trigger for Notify {
/// #     fn new(_: &Value) -> PluginResult<Self> { Ok(Notify) }
/// #     fn execute(&self, _: &TriggerContext, _: &Host<'_>) -> PluginResult<()> { Ok(()) }
/// # }
/// vespene_plugin_api::export_plugin! { description: "twice", trigger: Notify, trigger: Notify }
/// ```
///
/// ```compile_fail
/// # use vespene_plugin_api::serde_json::Value;
/// # use vespene_plugin_api::{Host, PluginResult, Trigger, TriggerContext};
/// # pub struct Notify;
/// # impl Trigger for Notify {
/// #     fn new(_: &Value) -> PluginResult<Self> { Ok(Notify) }
/// #     fn execute(&self, _: &TriggerContext, _: &Host<'_>) -> PluginResult<()> { Ok(()) }
/// # }
/// vespene_plugin_api::export_plugin! { description: "misspelt", triger: Notify }
/// ```
#[macro_export]
macro_rules! export_plugin {
    // Reading the entries, in any order, into [name] [description] [(kind Type)...].
    (@read [] [$($d:expr)?] [$($k:tt)*] name: $name:expr $(, $($rest:tt)*)?) => {
        $crate::export_plugin!(@read [$name] [$($d)?] [$($k)*] $($($rest)*)?);
    };
    (@read [$n:expr] [$($d:expr)?] [$($k:tt)*] name: $($rest:tt)*) => {
        compile_error!("export_plugin!: `name` is given twice");
    };
    (@read [$($n:expr)?] [] [$($k:tt)*] description: $description:expr $(, $($rest:tt)*)?) => {
        $crate::export_plugin!(@read [$($n)?] [$description] [$($k)*] $($($rest)*)?);
    };
    (@read [$($n:expr)?] [$d:expr] [$($k:tt)*] description: $($rest:tt)*) => {
        compile_error!("export_plugin!: `description` is given twice");
    };
    (@read [$($n:expr)?] [$($d:expr)?] [$($k:tt)*] $kind:ident : $ty:ty $(, $($rest:tt)*)?) => {
        $crate::export_plugin!(@read [$($n)?] [$($d)?] [$($k)* ($kind $ty)] $($($rest)*)?);
    };
    (@read [$($n:expr)?] [] [$($k:tt)*]) => {
        compile_error!("export_plugin!: `description: \"...\"` is required, one line saying what the plugin does");
    };
    (@read [$($n:expr)?] [$description:expr] [$(($kind:ident $ty:ty))*]) => {
        $( $crate::export_plugin!(@known $kind); )*
        // A kind named twice is a duplicate variant here.
        const _: () = {
            #[allow(dead_code, non_camel_case_types)]
            enum KindsNamedOnce { $($kind),* }
        };

        extern "C" fn __vespene_plugin_info() -> $crate::abi::PluginInfo {
            $crate::export::info_guarded(|| {
                let kinds: &[&str] = &[$(stringify!($kind)),*];
                $crate::export::info(
                    $crate::export_plugin!(@name $($n)?),
                    env!("CARGO_PKG_VERSION"),
                    $description,
                    kinds,
                )
            })
        }

        fn __vespene_root_module() -> $crate::abi::PluginModuleRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::abi::PluginModule {
                info: __vespene_plugin_info,
                new_trigger: $crate::export_plugin!(@find new_trigger $(($kind $ty))*),
                new_scm: $crate::export_plugin!(@find new_scm $(($kind $ty))*),
                new_isolation: $crate::export_plugin!(@find new_isolation $(($kind $ty))*),
                new_output: $crate::export_plugin!(@find new_output $(($kind $ty))*),
                new_authorization: $crate::export_plugin!(@find new_authorization $(($kind $ty))*),
                new_organization: $crate::export_plugin!(@find new_organization $(($kind $ty))*),
                new_variables: $crate::export_plugin!(@find new_variables $(($kind $ty))*),
                new_secrets: $crate::export_plugin!(@find new_secrets $(($kind $ty))*),
                new_autoscaler: $crate::export_plugin!(@find new_autoscaler $(($kind $ty))*),
                new_authentication: $crate::export_plugin!(@find new_authentication $(($kind $ty))*),
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

    (@name $name:expr) => { $name };
    (@name) => { $crate::plugin_name!() };

    (@known trigger) => {};
    (@known scm) => {};
    (@known isolation) => {};
    (@known output) => {};
    (@known authorization) => {};
    (@known organization) => {};
    (@known variables) => {};
    (@known secrets) => {};
    (@known autoscaler) => {};
    (@known authentication) => {};
    (@known $other:ident) => {
        compile_error!(concat!(
            "export_plugin!: `", stringify!($other), "` is not a plugin kind (trigger, scm, isolation, output, ",
            "authorization, organization, variables, secrets, autoscaler, authentication) nor `name` or `description`"
        ));
    };

    // The constructor for one kind: the type named for it, if any.
    (@find new_trigger (trigger $ty:ty) $($rest:tt)*) => { Some($crate::export::new_trigger::<$ty>) };
    (@find new_scm (scm $ty:ty) $($rest:tt)*) => { Some($crate::export::new_scm::<$ty>) };
    (@find new_isolation (isolation $ty:ty) $($rest:tt)*) => { Some($crate::export::new_isolation::<$ty>) };
    (@find new_output (output $ty:ty) $($rest:tt)*) => { Some($crate::export::new_output::<$ty>) };
    (@find new_authorization (authorization $ty:ty) $($rest:tt)*) => {
        Some($crate::export::new_authorization::<$ty>)
    };
    (@find new_organization (organization $ty:ty) $($rest:tt)*) => {
        Some($crate::export::new_organization::<$ty>)
    };
    (@find new_variables (variables $ty:ty) $($rest:tt)*) => { Some($crate::export::new_variables::<$ty>) };
    (@find new_secrets (secrets $ty:ty) $($rest:tt)*) => { Some($crate::export::new_secrets::<$ty>) };
    (@find new_autoscaler (autoscaler $ty:ty) $($rest:tt)*) => { Some($crate::export::new_autoscaler::<$ty>) };
    (@find new_authentication (authentication $ty:ty) $($rest:tt)*) => {
        Some($crate::export::new_authentication::<$ty>)
    };
    (@find $ctor:ident ($other:ident $ty:ty) $($rest:tt)*) => { $crate::export_plugin!(@find $ctor $($rest)*) };
    (@find $ctor:ident) => { None };

    ($($entries:tt)+) => {
        $crate::export_plugin!(@read [] [] [] $($entries)+);
    };
}
