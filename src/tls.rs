//! HTTPS served by `kraliki serve` itself, for single-host installs without
//! a reverse proxy: the certificate and key read from PEM files, the rustls
//! server configuration (TLS 1.2 and 1.3, AEAD cipher suites only, ALPN
//! `h2` and `http/1.1`), and reloading both files on SIGHUP.
//!
//! [`ServerCert`] holds the configuration in use; each connection takes it
//! when its handshake starts. A reload builds a whole new configuration
//! (new certificate, new session cache), so new handshakes get the new
//! certificate and cannot resume a session made under the old one, while
//! connections already open keep the session they have.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::ring::{cipher_suite, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite};
use sha2::Digest;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::config::TlsSettings;

/// A client must finish its TLS handshake within this long, else the
/// connection is closed. The handshake runs in the connection's own task,
/// so a slow one never holds up the accept loop.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The cipher suites offered: AEAD only (AES-GCM, ChaCha20-Poly1305), with
/// forward secrecy (ECDHE) on TLS 1.2. No CBC, no RSA key exchange.
pub const CIPHER_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Why the certificate or key cannot be used. Each message names the file;
/// none carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read (missing, no permission, a folder…).
    #[error("cannot read the TLS {what} file {path}: {source}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A PEM block is broken (no END line, bad base64, …).
    #[error("the TLS {what} file {path} is not valid PEM: {problem}")]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, without the file's content.
        problem: &'static str,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("the TLS certificate file {0} holds no PEM CERTIFICATE block")]
    NoCertificate(PathBuf),
    /// The key file holds no private key block.
    #[error(
        "the TLS key file {0} holds no PEM private key (a PRIVATE KEY, RSA PRIVATE KEY or \
         EC PRIVATE KEY block)"
    )]
    NoKey(PathBuf),
    /// The key is of a kind or size rustls cannot sign with.
    #[error("the TLS key file {0} holds a key that cannot be used for TLS: {1}")]
    UnusableKey(PathBuf, String),
    /// The certificate cannot be parsed, or its public key is not the key's.
    #[error("the TLS certificate file {cert} does not go with the key file {key}: {problem}")]
    Mismatch {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// rustls's reason.
        problem: String,
    },
    /// Production: the key file is readable by group or others.
    #[error(
        "the TLS key file {path} is readable by group or others (mode {mode:04o}); production \
         refuses it: run `chmod 600 {path}`"
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// rustls refused the configuration (not expected with the fixed lists).
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// The PEM files of the server's certificate and key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// Certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// Refuse a key file readable by group or others.
    pub private_key_only: bool,
}

impl CertFiles {
    /// The files named by the settings; `None` when HTTPS is off.
    pub fn from_settings(tls: &TlsSettings, production: bool) -> Option<CertFiles> {
        Some(CertFiles {
            cert: tls.cert.clone()?,
            key: tls.key.clone()?,
            private_key_only: production,
        })
    }

    /// Read and check both files: the chain is non-empty, the key is
    /// usable and belongs to the first certificate.
    pub fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let cert_pem = std::fs::read(&self.cert).map_err(|source| TlsError::Read {
            what: "certificate",
            path: self.cert.clone(),
            source,
        })?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "certificate",
                path: self.cert.clone(),
                problem: pem_problem(&e),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(self.cert.clone()));
        }

        if self.private_key_only {
            check_private(&self.key)?;
        }
        let key_pem =
            Zeroizing::new(std::fs::read(&self.key).map_err(|source| TlsError::Read {
                what: "key",
                path: self.key.clone(),
                source,
            })?);
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::NoKey(self.key.clone()),
            e => TlsError::Pem {
                what: "key",
                path: self.key.clone(),
                problem: pem_problem(&e),
            },
        })?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::UnusableKey(self.key.clone(), e.to_string()))?;

        let certified = CertifiedKey::new(chain, signing_key);
        certified.keys_match().map_err(|e| TlsError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            problem: e.to_string(),
        })?;
        Ok(certified)
    }
}

/// A PEM error as a fixed phrase: the library's own text may quote a line
/// of the file, and the key file's lines are secret.
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a BEGIN line has no matching END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block's base64 content is broken",
        pem::Error::Io(_) => "the file cannot be read",
        pem::Error::NoItemsFound => "it holds no PEM block of the expected kind",
        pem::Error::SectionTooLarge => "a block is too large",
        _ => "it cannot be parsed",
    }
}

/// Refuse a key file whose mode lets group or others read it.
fn check_private(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;

    let meta = std::fs::metadata(path).map_err(|source| TlsError::Read {
        what: "key",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// SHA-256 of the server's own certificate, hex: names a certificate in
/// logs without printing it.
pub fn fingerprint(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .map(|c| hex::encode(sha2::Sha256::digest(c.as_ref())))
        .unwrap_or_default()
}

/// The TLS configuration every new handshake gets, replaceable while
/// serving.
#[derive(Debug)]
pub struct ServerCert {
    files: CertFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Current>,
}

/// The configuration in use and its certificate's fingerprint.
#[derive(Debug, Clone)]
struct Current {
    config: Arc<ServerConfig>,
    fingerprint: String,
}

impl ServerCert {
    /// Load the files once; an error names the file and the problem.
    pub fn load(files: CertFiles) -> Result<Arc<ServerCert>, TlsError> {
        let provider = Arc::new(provider());
        let current = build(&files, &provider)?;
        Ok(Arc::new(ServerCert {
            files,
            provider,
            current: RwLock::new(current),
        }))
    }

    /// Read the files again and use them for new handshakes. On error the
    /// configuration in use stays. Returns the new certificate's
    /// fingerprint.
    pub fn reload(&self) -> Result<String, TlsError> {
        let current = build(&self.files, &self.provider)?;
        let fingerprint = current.fingerprint.clone();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = current;
        Ok(fingerprint)
    }

    /// The fingerprint of the certificate in use.
    pub fn fingerprint(&self) -> String {
        self.current().fingerprint
    }

    /// The files this certificate is read from.
    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    /// An acceptor with the configuration in use.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current().config)
    }

    fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The server configuration for the files: TLS 1.2 and 1.3,
/// [`CIPHER_SUITES`], ALPN `h2` then `http/1.1`, no client certificates.
fn build(files: &CertFiles, provider: &Arc<CryptoProvider>) -> Result<Current, TlsError> {
    let key = Arc::new(files.load(provider)?);
    let fingerprint = fingerprint(&key);
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedCert(key)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Current {
        config: Arc::new(config),
        fingerprint,
    })
}

/// One certificate for every handshake of a configuration.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// rustls's *ring* provider limited to [`CIPHER_SUITES`].
fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: CIPHER_SUITES.to_vec(),
        ..default_provider()
    }
}

/// Reload the certificate and key each time the process gets SIGHUP, in a
/// task of its own. A failed reload is logged and the old certificate
/// stays. Other SIGHUP listeners of the process are unaffected.
pub fn reload_on_sighup(cert: Arc<ServerCert>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let c = cert.clone();
            // File reads and key parsing: off the async workers.
            match tokio::task::spawn_blocking(move || c.reload()).await {
                Ok(Ok(fingerprint)) => tracing::info!(
                    cert = %cert.files().cert.display(),
                    sha256 = %fingerprint,
                    "TLS certificate reloaded"
                ),
                Ok(Err(err)) => tracing::error!(
                    error = %err,
                    sha256 = %cert.fingerprint(),
                    "TLS certificate reload failed; the previous certificate stays in use"
                ),
                Err(err) => tracing::error!(
                    error = %err,
                    "TLS certificate reload failed; the previous certificate stays in use"
                ),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aead_suites_with_forward_secrecy() {
        for suite in CIPHER_SUITES {
            let name = format!("{:?}", suite.suite());
            let aead = name.contains("_GCM_") || name.contains("_CHACHA20_POLY1305_");
            let fs = name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_");
            assert!(aead && fs, "{name}");
            assert!(!name.contains("CBC"), "{name}");
        }
        assert_eq!(provider().cipher_suites.len(), CIPHER_SUITES.len());
    }

    #[test]
    fn unreadable_and_malformed_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles {
            cert: dir.path().join("missing-cert.pem"),
            key: dir.path().join("key.pem"),
            private_key_only: false,
        };
        let err = files.load(&provider()).unwrap_err().to_string();
        assert!(
            err.contains("missing-cert.pem") && err.contains("cannot read"),
            "{err}"
        );

        std::fs::write(&files.cert, "not a certificate\n").unwrap();
        let err = files.load(&provider()).unwrap_err().to_string();
        assert!(
            err.contains("missing-cert.pem") && err.contains("no PEM CERTIFICATE"),
            "{err}"
        );

        std::fs::write(
            &files.cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n").unwrap();
        let err = files.load(&provider()).unwrap_err().to_string();
        assert!(
            err.contains("key.pem") && err.contains("no matching END"),
            "{err}"
        );
        assert!(
            !err.contains("c2VjcmV0"),
            "no key content in messages: {err}"
        );

        std::fs::write(&files.key, "").unwrap();
        let err = files.load(&provider()).unwrap_err().to_string();
        assert!(
            err.contains("key.pem") && err.contains("no PEM private key"),
            "{err}"
        );
    }

    #[test]
    fn production_refuses_a_key_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "").unwrap();
        for (mode, refused) in [(0o644, true), (0o640, true), (0o604, true), (0o600, false)] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let result = check_private(&key);
            assert_eq!(result.is_err(), refused, "mode {mode:o}");
            if let Err(err) = result {
                let text = err.to_string();
                assert!(
                    text.contains(&format!("chmod 600 {}", key.display())),
                    "{text}"
                );
            }
        }
    }
}
