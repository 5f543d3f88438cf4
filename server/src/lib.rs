//! The Vespene server: settings, the plugin host, storage, the build engine, the
//! web tier and the command line. Data flows one way: web and cli call the
//! engine, the engine calls the store and the plugins; plugins never touch the
//! database.

pub mod cli;
pub mod engine;
pub mod metrics;
pub mod plugins;
pub mod settings;
pub mod store;
pub mod web;
