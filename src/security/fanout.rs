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

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::security::ratelimit::{self, RateLimitError, REDIS_TIMEOUT};
use crate::store::events::StoredEvent;

/// Events waiting to be published; beyond this, new ones are not
/// published (they are still stored and delivered on this instance).
const QUEUE: usize = 1024;

/// Pause between attempts to subscribe while Redis is away.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// What goes over the channel.
#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The instance that raised the event, so it skips its own.
    origin: String,
    event: StoredEvent,
}

/// The publishing side, held by the security log.
#[derive(Clone)]
pub struct Fanout {
    queue: mpsc::Sender<StoredEvent>,
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
/// `url`; events of other instances go to `live`. Does not wait for Redis.
pub fn start(
    url: &str,
    prefix: &str,
    live: broadcast::Sender<StoredEvent>,
) -> Result<Fanout, RateLimitError> {
    let channel = format!("{prefix}security-events");
    let origin = uuid::Uuid::new_v4().to_string();
    let manager = ratelimit::redis_manager(url)?;
    let client = redis::Client::open(url).map_err(RateLimitError::RedisUrl)?;
    let (queue, mut pending) = mpsc::channel::<StoredEvent>(QUEUE);

    let (me, name) = (origin.clone(), channel.clone());
    tokio::spawn(async move {
        let mut failing = false;
        while let Some(event) = pending.recv().await {
            let envelope = Envelope {
                origin: me.clone(),
                event,
            };
            let Ok(payload) = serde_json::to_string(&envelope) else {
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

    tokio::spawn(async move {
        let mut logged_outage = false;
        loop {
            match subscribe(&client, &channel).await {
                Ok(mut pubsub) => {
                    if logged_outage {
                        tracing::info!("subscribed to live events of the other instances again");
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(envelope) =
                            serde_json::from_slice::<Envelope>(msg.get_payload_bytes())
                        else {
                            tracing::warn!("ignored a malformed message on the live event channel");
                            continue;
                        };
                        if envelope.origin != origin {
                            // No subscribers is normal.
                            let _ = live.send(envelope.event);
                        }
                    }
                    tracing::warn!("lost the subscription to live events of the other instances");
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

    Ok(Fanout { queue })
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
