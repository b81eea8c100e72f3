//! TLS for the daemons' listeners: a rustls server config from PEM files (a
//! certificate chain and its private key), no OpenSSL. Used by
//! [`crate::http::serve_tls`]; the TLS handshake counts against the header
//! read timeout, so a client that stalls in the handshake holds one slot for
//! at most that long.
//!
//! The certificate is reloadable ([`Certificate::reload`], on SIGHUP): new
//! handshakes get the new one, connections already open keep theirs, and a
//! reload that fails (unreadable file, key not matching) keeps the old one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate or key could not be used; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The listener's certificate and key, read from their PEM files, swappable.
#[derive(Debug)]
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// The certificate and key files, for printouts (`--check-config --print`).
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }

    /// Reads `cert` (PEM, the certificate first, then its chain) and `key`
    /// (PEM, PKCS#8, PKCS#1 or SEC1) and checks that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificate>, TlsError> {
        let current = RwLock::new(read_pair(cert, key)?);
        Ok(Arc::new(Certificate { cert: cert.to_path_buf(), key: key.to_path_buf(), current }))
    }

    /// Reads the files again. On error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = read_pair(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// A server config for HTTP/1.1 over TLS 1.2/1.3 that presents this
    /// certificate (whatever it is at handshake time).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Installs a SIGHUP handler (now, so that a SIGHUP sent once the daemon is
/// ready never kills it) and returns the task to spawn: on every SIGHUP it
/// re-reads `cert`. New handshakes get the new certificate, open connections
/// keep theirs, and a bad pair keeps the old one (logged at ERROR: a human must
/// fix the files). Without TLS (`None`) a SIGHUP is logged and ignored, so
/// `systemctl reload` (`ExecReload=/bin/kill -HUP $MAINPID`) is harmless.
pub fn reload_on_sighup(cert: Option<Arc<Certificate>>) -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let hup = signal(SignalKind::hangup());
    async move {
        let Ok(mut hup) = hup else {
            tracing::warn!("no SIGHUP handler: the TLS certificate is reloaded only by a restart");
            return;
        };
        while hup.recv().await.is_some() {
            match &cert {
                None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                Some(cert) => match cert.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use"),
                },
            }
        }
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner())))
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError(format!("read {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("parse {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!("{} holds no PEM certificate", cert.display())));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError(format!("read {}: {e}", key.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| TlsError(format!("{}: unusable private key: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError(format!("{} is not the key of {}: {e}", key.display(), cert.display())))?;
    Ok(Arc::new(certified))
}
