//! The plugin host: resolving settings entries to `.so` files, loading them with
//! the interface version and layout checks, instantiating them with their
//! parameters, and the callbacks the host lends plugins (output, cancellation,
//! commands, secrets), and the secrets chain the store seals values with. Plugins never see the database; everything they need
//! arrives as JSON context.

pub mod console;
pub mod loader;
pub mod registry;
pub mod secrets;

pub use loader::{open, resolve, Library};
pub use registry::{provided_kinds, Instance, LoadedPlugin, PluginLoadError, PluginSummary, Registry};
pub use secrets::SecretsChain;
