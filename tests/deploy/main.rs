//! Deployment tests: the files under `deploy/` checked for the invariants
//! of DESIGN §9, and the repository's nginx configuration run for real in
//! front of two `kraliki serve` processes.
//!
//! Not part of plain `cargo test`: they need nginx and openssl, which
//! `scripts/install-deploy-test-deps.sh` installs from Debian's packages.
//! Run them with
//!
//! ```sh
//! scripts/install-deploy-test-deps.sh
//! cargo test --features deploy-tests --test deploy
//! ```
//!
//! A missing nginx or openssl fails these tests loudly; they never skip.

mod dockerfile;
mod nginx;
mod observatory;
mod stack;
mod support;
