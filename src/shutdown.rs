//! The shutdown notice: tells long-lived responses (WebSockets, server-sent
//! event streams) that the server is stopping, and lets the server wait
//! until they have ended.
//!
//! Ordinary requests finish by themselves and hyper's graceful shutdown
//! waits for them; a live stream never finishes, and an upgraded WebSocket
//! is no longer a connection hyper tracks. Each of them holds a
//! [`ShutdownListener`] for as long as it runs: it ends when told to, and
//! the server waits for every listener to be dropped.

use tokio::sync::watch;

/// Owned by the shared state; one per server.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A notice that has not been given.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Shutdown { tx }
    }

    /// A listener for one long-lived response; hold it until the response
    /// ends.
    pub fn subscribe(&self) -> ShutdownListener {
        ShutdownListener(self.tx.subscribe())
    }

    /// Tell every listener, present and future, that the server is
    /// stopping.
    pub fn begin(&self) {
        self.tx.send_replace(true);
    }

    /// Whether [`Shutdown::begin`] was called.
    pub fn has_begun(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes once no listener is left.
    pub async fn drained(&self) {
        self.tx.closed().await;
    }
}

/// Held by one long-lived response while it runs.
#[derive(Debug)]
pub struct ShutdownListener(watch::Receiver<bool>);

impl ShutdownListener {
    /// Completes once shutdown has begun (at once if it already has).
    /// Cancel-safe, so it can sit in a `select!` loop.
    pub async fn begun(&mut self) {
        // An error means the state is gone: that is a shutdown too.
        let _ = self.0.wait_for(|begun| *begun).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn listeners_hear_the_notice_and_the_server_waits_for_them() {
        let shutdown = Shutdown::new();
        // No listener: nothing to wait for.
        tokio::time::timeout(Duration::from_millis(100), shutdown.drained())
            .await
            .expect("drained at once");

        let mut listener = shutdown.subscribe();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), listener.begun())
                .await
                .is_err(),
            "no notice yet"
        );
        assert!(!shutdown.has_begun());
        shutdown.begin();
        assert!(shutdown.has_begun());
        tokio::time::timeout(Duration::from_millis(100), listener.begun())
            .await
            .expect("the notice arrives");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), shutdown.drained())
                .await
                .is_err(),
            "a listener is still held"
        );
        drop(listener);
        tokio::time::timeout(Duration::from_millis(100), shutdown.drained())
            .await
            .expect("drained once the listener is gone");

        // A listener made after the notice hears it at once.
        let mut late = shutdown.subscribe();
        tokio::time::timeout(Duration::from_millis(100), late.begun())
            .await
            .expect("a late listener hears it at once");
    }
}
