//! TLS for the daemons' listeners: a rustls server config from PEM files (a
//! certificate chain and its private key), no OpenSSL. Used by
//! [`crate::http::serve_tls`]; the TLS handshake counts against the header
//! read timeout, so a client that stalls in the handshake holds one slot for
//! at most that long.
//!
//! The certificate is reloadable ([`Certificate::reload`], on SIGHUP): new
//! handshakes get the new one, connections already open keep theirs, and a
//! reload that fails (unreadable file, key not matching) keeps the old one.
//!
//! Client certificates ([`ClientCa`], ledgerd's `[listen] tls_client_ca`): with
//! a client CA, the listener **requires** every client to present a
//! certificate that chains to one of its CA certificates (rustls'
//! `WebPkiClientVerifier`); a client without one, or with one from another CA,
//! fails the handshake and never reaches HTTP. The bearer token is still
//! required on top (the certificate is a second factor, not a replacement).
//! The client CA bundle reloads on SIGHUP like the certificate. The server
//! sends no CA names in its certificate request (the hint list is empty, which
//! TLS allows: a client then presents the certificate it has), because the
//! hints would have to outlive a reload.
//!
//! [`read_identity_pem`] checks a client's certificate and key the same way as
//! a listener's pair (the forwarder's `[ledger] client_cert` / `client_key`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

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
    /// certificate (whatever it is at handshake time), and requires a client
    /// certificate from `client_ca` when one is given.
    pub fn server_config(self: &Arc<Self>, client_ca: Option<&Arc<ClientCa>>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(Arc::clone(ca) as Arc<dyn ClientCertVerifier>),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Something SIGHUP re-reads from its files ([`reload_on_sighup`]).
pub trait Reload: Send + Sync {
    /// What it is, for the log: "TLS certificate", "TLS client CA", ….
    fn what(&self) -> &'static str;
    /// Reads the files again; on error the one in use stays.
    fn reload(&self) -> Result<(), TlsError>;
}

impl Reload for Certificate {
    fn what(&self) -> &'static str {
        "TLS certificate"
    }

    fn reload(&self) -> Result<(), TlsError> {
        Certificate::reload(self)
    }
}

/// The CA certificates a listener requires client certificates to chain to
/// (`[listen] tls_client_ca`, a PEM bundle), swappable on SIGHUP.
#[derive(Debug)]
pub struct ClientCa {
    path: PathBuf,
    /// CA certificates in the bundle now (for printouts).
    count: std::sync::atomic::AtomicUsize,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl ClientCa {
    /// The bundle's path, for printouts.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// CA certificates in the bundle as last read.
    pub fn len(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Never true: an empty bundle is refused.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the PEM bundle at `path`: at least one certificate, each usable
    /// as a trust anchor.
    pub fn load(path: &Path) -> Result<Arc<ClientCa>, TlsError> {
        let (verifier, n) = read_client_ca(path)?;
        Ok(Arc::new(ClientCa {
            path: path.to_path_buf(),
            count: std::sync::atomic::AtomicUsize::new(n),
            current: RwLock::new(verifier),
        }))
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Reload for ClientCa {
    fn what(&self) -> &'static str {
        "TLS client CA"
    }

    fn reload(&self) -> Result<(), TlsError> {
        let (fresh, n) = read_client_ca(&self.path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.count.store(n, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

fn read_client_ca(path: &Path) -> Result<(Arc<dyn ClientCertVerifier>, usize), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("read {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("parse {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{} holds no PEM certificate", path.display())));
    }
    let n = certs.len();
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| TlsError(format!("{}: not a usable CA certificate: {e}", path.display())))?;
    }
    // Mandatory: no `allow_unauthenticated`, a client without a certificate fails the handshake.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
    Ok((verifier, n))
}

/// Delegates to the verifier of the bundle as it is at handshake time.
impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// Empty (allowed by TLS): hints borrowed from a reloadable bundle
    /// could not outlive a reload.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// Reads a client certificate (PEM chain, certificate first) and its key
/// (PEM), checks that they belong together, and returns both as one PEM
/// buffer (what `reqwest::Identity::from_pem` takes).
pub fn read_identity_pem(cert: &Path, key: &Path) -> Result<Vec<u8>, TlsError> {
    read_pair(cert, key)?;
    let mut pem = std::fs::read(cert).map_err(|e| TlsError(format!("read {}: {e}", cert.display())))?;
    pem.push(b'\n');
    pem.extend(std::fs::read(key).map_err(|e| TlsError(format!("read {}: {e}", key.display())))?);
    Ok(pem)
}

/// Installs a SIGHUP handler (now, so that a SIGHUP sent once the daemon is
/// ready never kills it) and returns the task to spawn: on every SIGHUP it
/// re-reads each of `files` (the listener's certificate, its client CA, the
/// forwarder's client files), each on its own. New handshakes get the new
/// files, open connections keep theirs, and a bad file keeps the old one
/// (logged at ERROR: a human must fix the files). With nothing to reload (no
/// TLS) a SIGHUP is logged and ignored, so `systemctl reload`
/// (`ExecReload=/bin/kill -HUP $MAINPID`) is harmless.
pub fn reload_on_sighup(files: Vec<Arc<dyn Reload>>) -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let hup = signal(SignalKind::hangup());
    async move {
        let Ok(mut hup) = hup else {
            tracing::warn!("no SIGHUP handler: TLS files are reloaded only by a restart");
            return;
        };
        while hup.recv().await.is_some() {
            if files.is_empty() {
                tracing::info!("SIGHUP: no TLS certificate to reload");
            }
            for f in &files {
                let what = f.what();
                match f.reload() {
                    Ok(()) => tracing::info!(what, "{what} reloaded"),
                    Err(e) => tracing::error!(what, error = %e, "{what} not reloaded; the previous one stays in use"),
                }
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
