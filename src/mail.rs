//! Outgoing e-mail: SMTP through lettre, or, in development without an SMTP
//! host, a file outbox under `<data_dir>/outbox/` (one `.eml` per message).

use std::path::PathBuf;

use anyhow::Context;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::Settings;
use crate::secrets::Secrets;

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    /// Files in a folder (development).
    Outbox(PathBuf),
    /// An SMTP relay.
    Smtp {
        /// Transport (STARTTLS).
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        /// Sender.
        from: Mailbox,
    },
}

impl Mailer {
    /// Build from settings: SMTP when a host is set, else the outbox.
    pub fn from_settings(settings: &Settings, secrets: &Secrets) -> anyhow::Result<Mailer> {
        if settings.smtp.host.is_empty() {
            return Ok(Mailer::Outbox(settings.data_dir.join("outbox")));
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.smtp.host)
            .context("while configuring the SMTP relay")?
            .port(settings.smtp.port);
        if !settings.smtp.username.is_empty() {
            let password = secrets
                .smtp_password
                .as_ref()
                .map(|p| p.expose_secret().to_string())
                .unwrap_or_default();
            builder =
                builder.credentials(Credentials::new(settings.smtp.username.clone(), password));
        }
        let from: Mailbox = settings
            .smtp
            .from
            .parse()
            .context("smtp.from is not a valid mailbox")?;
        Ok(Mailer::Smtp {
            transport: Box::new(builder.build()),
            from,
        })
    }

    /// Send a plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> anyhow::Result<()> {
        match self {
            Mailer::Outbox(dir) => {
                crate::secrets::create_private_dir(dir)?;
                let name = format!("{}-{}.eml", crate::store::now_ms(), uuid::Uuid::new_v4());
                let text = format!("To: {to}\nSubject: {subject}\n\n{body}\n");
                crate::secrets::write_private_file(&dir.join(name), text.as_bytes(), false)
                    .context("while writing to the outbox")?;
                Ok(())
            }
            Mailer::Smtp { transport, from } => {
                let message = Message::builder()
                    .from(from.clone())
                    .to(to.parse().context("recipient address")?)
                    .subject(subject)
                    .body(body.to_string())
                    .context("while building the message")?;
                transport
                    .send(message)
                    .await
                    .context("while sending mail")?;
                Ok(())
            }
        }
    }
}
