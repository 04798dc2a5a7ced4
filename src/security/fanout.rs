//! Live security events across instances: with Redis configured, every
//! HIGH or CRITICAL event an instance raises is published on one Redis
//! channel, and every instance hands the events of the others to its own
//! live subscribers (the admin event stream and WebSockets). An admin
//! connected to one instance sees what happens on all of them.
//!
//! Only the live copy crosses instances: each instance stores, logs and
//! alerts on its own events, so nothing is stored or alerted twice. The
//! channel is best effort, like any live view: while Redis is away each
//! instance's subscribers see that instance's events (every event is
//! stored, so `GET /api/security/events` misses nothing), and the
//! subscription is remade once a second until Redis answers again.
//!
//! Messages are signed with a key derived from `audit_key` (the one key
//! every instance shares and that never rotates in place), and a message
//! that is unsigned, altered, oversized or below HIGH is dropped: whoever
//! can write to Redis still cannot put alerts into an admin's stream.
//! Every instance also publishes a heartbeat every 20 s and resubscribes
//! when it has heard nothing, not even its own heartbeat, for a minute, so
//! a silently dead connection does not go unnoticed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::secrets::Key32;
use crate::security::ratelimit::{self, RateLimitError, REDIS_TIMEOUT};
use crate::store::events::StoredEvent;

/// Events waiting to be published; beyond this, new ones are not
/// published (they are still stored and delivered on this instance).
const QUEUE: usize = 1024;

/// Pause between attempts to subscribe while Redis is away.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// How often each instance says it is there.
const HEARTBEAT: Duration = Duration::from_secs(20);

/// Silence after which a subscription is taken for dead and remade.
const SILENCE: Duration = Duration::from_secs(60);

/// Largest message accepted from the channel.
const MAX_MESSAGE: usize = 64 * 1024;

/// What goes over the channel: an event, or (without one) a heartbeat.
#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The instance that raised the event, so it skips its own.
    origin: String,
    event: Option<StoredEvent>,
}

/// The key messages are signed with, derived from `audit_key`.
#[derive(Clone)]
struct SigningKey([u8; 32]);

impl SigningKey {
    fn derive(audit_key: &Key32) -> SigningKey {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(audit_key.expose()).expect("HMAC takes any key length");
        mac.update(b"kraliki live-event fan-out v1");
        SigningKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// `<hex HMAC-SHA256>.<envelope JSON>`.
    fn seal(&self, envelope: &Envelope) -> Option<String> {
        let json = serde_json::to_string(envelope).ok()?;
        let mut mac = self.mac();
        mac.update(json.as_bytes());
        Some(format!(
            "{}.{json}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }

    /// The envelope of a message this deployment signed, if it is one
    /// (compared in constant time), not too large, and carries nothing
    /// below HIGH.
    fn open(&self, message: &[u8]) -> Option<Envelope> {
        if message.len() > MAX_MESSAGE {
            return None;
        }
        let text = std::str::from_utf8(message).ok()?;
        let (tag, json) = text.split_once('.')?;
        let tag = hex::decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(json.as_bytes());
        mac.verify_slice(&tag).ok()?;
        let envelope: Envelope = serde_json::from_str(json).ok()?;
        match &envelope.event {
            Some(e) if e.severity != "HIGH" && e.severity != "CRITICAL" => None,
            _ => Some(envelope),
        }
    }
}

/// The publishing side, held by the security log. When the last clone is
/// dropped, both background tasks end.
#[derive(Clone)]
pub struct Fanout {
    queue: mpsc::Sender<StoredEvent>,
    _alive: Arc<()>,
}

impl Fanout {
    /// Publish `event` to the other instances, without waiting.
    pub fn publish(&self, event: &StoredEvent) {
        if self.queue.try_send(event.clone()).is_err() {
            tracing::warn!("live event fan-out queue full; event delivered on this instance only");
        }
    }
}

/// Start publishing to and listening on `<prefix>security-events` at
/// `url`, signing with a key derived from `audit_key`; events of other
/// instances go to `live`. Does not wait for Redis.
pub fn start(
    url: &str,
    prefix: &str,
    audit_key: &Key32,
    live: broadcast::Sender<StoredEvent>,
) -> Result<Fanout, RateLimitError> {
    let key = SigningKey::derive(audit_key);
    let alive = Arc::new(());
    let channel = format!("{prefix}security-events");
    let origin = uuid::Uuid::new_v4().to_string();
    let manager = ratelimit::redis_manager(url)?;
    let client = redis::Client::open(url).map_err(RateLimitError::RedisUrl)?;
    let (queue, mut pending) = mpsc::channel::<StoredEvent>(QUEUE);

    let (me, name, signer) = (origin.clone(), channel.clone(), key.clone());
    tokio::spawn(async move {
        let mut failing = false;
        let mut beat = tokio::time::interval(HEARTBEAT);
        loop {
            let event = tokio::select! {
                next = pending.recv() => match next {
                    Some(event) => Some(event),
                    // Every Fanout is gone: the server state was dropped.
                    None => break,
                },
                _ = beat.tick() => None,
            };
            let envelope = Envelope {
                origin: me.clone(),
                event,
            };
            let Some(payload) = signer.seal(&envelope) else {
                continue;
            };
            let mut conn = manager.clone();
            let published = tokio::time::timeout(
                REDIS_TIMEOUT,
                redis::cmd("PUBLISH")
                    .arg(&name)
                    .arg(payload)
                    .query_async::<i64>(&mut conn),
            )
            .await;
            match published {
                Ok(Ok(_)) if failing => {
                    failing = false;
                    tracing::info!("Redis answers again; live events reach every instance again");
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) if !failing => {
                    failing = true;
                    tracing::warn!("Redis failed; live events reach this instance's clients only");
                }
                _ => {}
            }
        }
    });

    let watching: Weak<()> = Arc::downgrade(&alive);
    tokio::spawn(async move {
        let mut logged_outage = false;
        while watching.strong_count() > 0 {
            match subscribe(&client, &channel).await {
                Ok(mut pubsub) => {
                    if logged_outage {
                        tracing::info!("subscribed to live events of the other instances again");
                    }
                    let mut messages = pubsub.on_message();
                    let mut heard = Instant::now();
                    loop {
                        let next = tokio::select! {
                            next = messages.next() => next,
                            () = tokio::time::sleep_until(heard + SILENCE) => {
                                tracing::warn!("no live-event heartbeat for a minute; subscribing again");
                                break;
                            }
                        };
                        let Some(msg) = next else {
                            tracing::warn!(
                                "lost the subscription to live events of the other instances"
                            );
                            break;
                        };
                        if watching.strong_count() == 0 {
                            return;
                        }
                        let Some(envelope) = key.open(msg.get_payload_bytes()) else {
                            tracing::warn!(
                                "dropped an unsigned or invalid message on the live event channel"
                            );
                            continue;
                        };
                        heard = Instant::now();
                        match envelope.event {
                            // No subscribers is normal.
                            Some(event) if envelope.origin != origin => {
                                let _ = live.send(event);
                            }
                            _ => {}
                        }
                    }
                    logged_outage = true;
                }
                Err(e) if !logged_outage => {
                    tracing::warn!(error = %e, "cannot subscribe to live events of the other instances");
                    logged_outage = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(RESUBSCRIBE_AFTER).await;
        }
    });

    Ok(Fanout {
        queue,
        _alive: alive,
    })
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSub, String> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(REDIS_TIMEOUT * 3, attempt).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        // The error text of the redis crate does not repeat the URL.
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(severity: &str) -> StoredEvent {
        StoredEvent {
            id: "e1".into(),
            organization_id: Some("org-1".into()),
            event_type: "TOKEN_REUSE_DETECTED".into(),
            severity: severity.into(),
            ip: "192.0.2.1".into(),
            method: "POST".into(),
            url: "/api/auth/refresh".into(),
            request_id: "r1".into(),
            user_id: None,
            details: "{}".into(),
            created_at: 1,
        }
    }

    fn envelope(severity: &str) -> Envelope {
        Envelope {
            origin: "a".into(),
            event: Some(event(severity)),
        }
    }

    #[test]
    fn only_signed_unaltered_high_events_are_opened() {
        let key = SigningKey::derive(&Key32::new([7; 32]));
        let sealed = key.seal(&envelope("HIGH")).unwrap();
        let opened = key.open(sealed.as_bytes()).expect("a signed message opens");
        assert_eq!(opened.event.unwrap().event_type, "TOKEN_REUSE_DETECTED");
        // Heartbeats open too.
        let beat = key
            .seal(&Envelope {
                origin: "a".into(),
                event: None,
            })
            .unwrap();
        assert!(key.open(beat.as_bytes()).unwrap().event.is_none());

        // Altered, unsigned, signed with another key, too large, or below HIGH.
        let altered = sealed.replace("org-1", "org-2");
        assert!(key.open(altered.as_bytes()).is_none());
        let (_, json) = sealed.split_once('.').unwrap();
        assert!(key.open(json.as_bytes()).is_none());
        assert!(key.open(format!("00.{json}").as_bytes()).is_none());
        let other = SigningKey::derive(&Key32::new([8; 32]));
        assert!(other.open(sealed.as_bytes()).is_none());
        let medium = key.seal(&envelope("MEDIUM")).unwrap();
        assert!(key.open(medium.as_bytes()).is_none());
        let mut big = envelope("HIGH");
        big.event.as_mut().unwrap().details = "x".repeat(MAX_MESSAGE);
        let big = key.seal(&big).unwrap();
        assert!(key.open(big.as_bytes()).is_none());
    }
}
