//! The Vespene server: settings, the plugin host, storage, the build engine, the
//! service layer, the web tier and the command line. Each module names only
//! the layers below it (metrics and settings, then store, plugins, engine,
//! service, web, cli; checked by
//! `tests/layers.rs`, described in ARCHITECTURE.md); plugins never touch the
//! database.

pub mod cli;
pub mod engine;
pub mod metrics;
pub mod plugins;
pub mod service;
pub mod settings;
pub mod store;
pub mod web;
