//! Voice by Kraliki: a self-hosted, security-first call-center backend.
//!
//! The binary `kraliki` is a thin shell around [`cli::main`]; tests build
//! the server with [`startup::build_state`] and [`http::router`].

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod docker_secrets;
pub mod error;
pub mod http;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod rotation;
pub mod secrets;
pub mod security;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
