//! The tamper-evident audit trail: who did what to which object, from
//! where. Entries are chained with HMAC-SHA256 under `audit_key`: each MAC
//! covers the entry's fields and the previous entry's MAC, so altering,
//! removing or reordering an entry breaks the chain at that entry.
//!
//! Known limit: an attacker who can write to the database can cut entries
//! off the end and roll the head row back with them; `kraliki audit verify`
//! prints the head so operators can record it elsewhere and notice that.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::request::RequestMeta;
use crate::secrets::Key32;
use crate::store::audit::{self as rows, AuditRow};
use crate::store::{self, Db};

/// Who acted.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A signed-in (or signing-in) user.
    User(String),
    /// The command line on the server.
    Cli,
    /// The server itself.
    System,
    /// Someone not (yet) identified, e.g. a sign-in with an unknown e-mail.
    Anonymous,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Tried and failed (e.g. wrong password).
    Failure,
    /// Refused for lack of permission.
    Denied,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// One thing to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Who.
    pub actor: Actor,
    /// Organization concerned.
    pub organization_id: Option<String>,
    /// What, e.g. `auth.login`, `user.role_change`.
    pub action: &'static str,
    /// Kind of object, e.g. `session`, `user`, `organization`.
    pub object_type: &'static str,
    /// Which object.
    pub object_id: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Extra fields (never secrets).
    pub details: Value,
}

impl AuditEvent {
    /// A successful action by a user on an object.
    pub fn by_user(
        user_id: &str,
        organization_id: &str,
        action: &'static str,
        object_type: &'static str,
        object_id: Option<&str>,
    ) -> Self {
        AuditEvent {
            actor: Actor::User(user_id.to_string()),
            organization_id: Some(organization_id.to_string()),
            action,
            object_type,
            object_id: object_id.map(str::to_string),
            outcome: Outcome::Success,
            details: Value::Object(Default::default()),
        }
    }

    /// An action by someone not identified.
    pub fn anonymous(action: &'static str, object_type: &'static str) -> Self {
        AuditEvent {
            actor: Actor::Anonymous,
            organization_id: None,
            action,
            object_type,
            object_id: None,
            outcome: Outcome::Failure,
            details: Value::Object(Default::default()),
        }
    }

    /// Change the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Add a detail field.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.details {
            map.insert(key.to_string(), value.into());
        }
        self
    }
}

/// Short public id of an audit key (first 8 bytes of its SHA-256, hex), so
/// entries name the key that sealed them without revealing it.
pub fn key_id(key: &Key32) -> String {
    hex::encode(&Sha256::digest(key.expose())[..8])
}

/// The MAC of a row: HMAC-SHA256 over a length-prefixed encoding of every
/// field but the MAC itself.
pub fn compute_mac(key: &Key32, row: &AuditRow) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose()).expect("any key length");
    let mut field = |s: &str| {
        mac.update(&(s.len() as u64).to_be_bytes());
        mac.update(s.as_bytes());
    };
    field("kraliki-audit-v1");
    field(&row.seq.to_string());
    field(&row.id);
    field(row.organization_id.as_deref().unwrap_or("\u{0}none"));
    field(&row.actor_type);
    field(row.actor_id.as_deref().unwrap_or("\u{0}none"));
    field(&row.action);
    field(&row.object_type);
    field(row.object_id.as_deref().unwrap_or("\u{0}none"));
    field(&row.outcome);
    field(&row.ip);
    field(&row.request_id);
    field(&row.details);
    field(&row.created_at.to_string());
    field(&row.key_id);
    field(&row.prev_mac);
    hex::encode(mac.finalize().into_bytes())
}

/// Append an entry for `event`, seen in the request `meta` (None outside
/// requests).
pub async fn record(
    db: &Db,
    key: &Key32,
    meta: Option<&RequestMeta>,
    event: AuditEvent,
) -> anyhow::Result<()> {
    let (actor_type, actor_id) = match &event.actor {
        Actor::User(id) => ("user", Some(id.clone())),
        Actor::Cli => ("cli", None),
        Actor::System => ("system", None),
        Actor::Anonymous => ("anonymous", None),
    };
    let kid = key_id(key);
    rows::append(db, |seq, prev_mac| {
        let mut row = AuditRow {
            seq,
            id: store::new_id(),
            organization_id: event.organization_id.clone(),
            actor_type: actor_type.to_string(),
            actor_id: actor_id.clone(),
            action: event.action.to_string(),
            object_type: event.object_type.to_string(),
            object_id: event.object_id.clone(),
            outcome: event.outcome.as_str().to_string(),
            ip: meta
                .map(|m| m.ip.to_string())
                .unwrap_or_else(|| actor_type.to_string()),
            request_id: meta.map(|m| m.request_id.clone()).unwrap_or_default(),
            details: event.details.to_string(),
            created_at: store::now_ms(),
            key_id: kid.clone(),
            prev_mac: prev_mac.to_string(),
            mac: String::new(),
        };
        row.mac = compute_mac(key, &row);
        row
    })
    .await
    .map_err(|e| anyhow::Error::new(e).context("while appending to the audit log"))?;
    Ok(())
}

/// The first problem found in the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A sequence number is missing.
    #[error("entry {expected} is missing (the chain jumps from {previous} to {found})")]
    Missing {
        /// Last good sequence number.
        previous: i64,
        /// The number that should have followed.
        expected: i64,
        /// The number found instead.
        found: i64,
    },
    /// The entry does not link to its predecessor (reordered or replaced).
    #[error("entry {seq} (id {id}) does not follow entry {previous}: reordered or replaced")]
    BrokenLink {
        /// Sequence number.
        seq: i64,
        /// Entry id.
        id: String,
        /// Predecessor's sequence number.
        previous: i64,
    },
    /// The entry's contents do not match its MAC.
    #[error("entry {seq} (id {id}) was altered: its MAC does not match its contents")]
    Altered {
        /// Sequence number.
        seq: i64,
        /// Entry id.
        id: String,
    },
    /// The entry was sealed with a key this server does not have.
    #[error("entry {seq} (id {id}) was sealed with unknown audit key {key_id}")]
    UnknownKey {
        /// Sequence number.
        seq: i64,
        /// Entry id.
        id: String,
        /// The key id named by the entry.
        key_id: String,
    },
    /// Entries at the end are missing (the head names a later entry).
    #[error("entries after {last} are missing: the head names entry {head}")]
    Truncated {
        /// Last entry present.
        last: i64,
        /// Entry the head names.
        head: i64,
    },
}

/// Result of a successful verification.
#[derive(Debug, Clone)]
pub struct ChainSummary {
    /// Entries checked.
    pub entries: i64,
    /// MAC of the last entry (empty when there are none).
    pub head_mac: String,
}

/// Walk the whole chain in order and report the first problem.
pub async fn verify(db: &Db, key: &Key32) -> anyhow::Result<Result<ChainSummary, ChainError>> {
    let kid = key_id(key);
    let mut previous_seq = 0i64;
    let mut previous_mac = String::new();
    loop {
        let page = rows::after(db, previous_seq, 500).await?;
        if page.is_empty() {
            break;
        }
        for row in page {
            if row.seq != previous_seq + 1 {
                return Ok(Err(ChainError::Missing {
                    previous: previous_seq,
                    expected: previous_seq + 1,
                    found: row.seq,
                }));
            }
            if row.key_id != kid {
                return Ok(Err(ChainError::UnknownKey {
                    seq: row.seq,
                    id: row.id,
                    key_id: row.key_id,
                }));
            }
            let expected = compute_mac(key, &row);
            if !bool::from(expected.as_bytes().ct_eq(row.mac.as_bytes())) {
                return Ok(Err(ChainError::Altered {
                    seq: row.seq,
                    id: row.id,
                }));
            }
            if row.prev_mac != previous_mac {
                return Ok(Err(ChainError::BrokenLink {
                    seq: row.seq,
                    id: row.id,
                    previous: previous_seq,
                }));
            }
            previous_seq = row.seq;
            previous_mac = row.mac;
        }
    }
    let (head_seq, head_mac) = rows::head(db).await?;
    if head_seq > previous_seq {
        return Ok(Err(ChainError::Truncated {
            last: previous_seq,
            head: head_seq,
        }));
    }
    if head_seq == previous_seq && head_mac != previous_mac {
        return Ok(Err(ChainError::BrokenLink {
            seq: previous_seq,
            id: String::from("(head)"),
            previous: previous_seq,
        }));
    }
    Ok(Ok(ChainSummary {
        entries: previous_seq,
        head_mac: previous_mac,
    }))
}
