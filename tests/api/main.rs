//! Integration tests: a real server on a loopback port, real HTTP, and the
//! database chosen by `KRALIKI_TEST_DATABASE_URL` (PostgreSQL when set,
//! SQLite otherwise). See `helpers.rs`.

mod helpers;

mod alerts;
mod audit;
mod audit_actions;
mod cli;
mod faults;
mod headers;
mod ids;
mod metrics;
mod outbound;
mod passwords;
mod production;
mod ratelimit;
mod redis_shared;
mod registration;
mod rotation;
mod security_events;
mod sessions;
mod shutdown;
mod signin_hardening;
mod smoke;
mod stored_tokens;
mod tenancy;
mod tls;
mod tokens;
mod totp;
mod websocket;
