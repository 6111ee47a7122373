//! TLS for `wss://` (rustls): the certificate and key from PEM files, optional client certificates, and a reload that swaps the configuration for new connections only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// Where the TLS material is read from (and read again on [`Tls::reload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
}

/// The server's TLS configuration: what new connections are accepted with.
///
/// A connection takes the configuration current when it was accepted and keeps it;
/// [`Tls::reload`] only changes what later connections get.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn tls_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what} {}: {e}", path.display()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, what, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, what, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// Builds a configuration from the files as they are now.
fn load(files: &TlsFiles) -> Result<ServerConfig, Error> {
    let certs = read_certs(&files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_error(&files.key, "--tls-key", e))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path, "--tls-client-ca")? {
                roots
                    .add(cert)
                    .map_err(|e| tls_error(path, "--tls-client-ca", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| tls_error(path, "--tls-client-ca", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("--tls-cert and --tls-key: {e}")))?;
    // WebSocket upgrades are HTTP/1.1; saying so lets a client or proxy that offers h2
    // fall back at once.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// Reads the certificate, the key and the client CAs; fails if any is unusable.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, Error> {
        let config = load(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// Reads the files again (after a certificate renewal). On success new connections
    /// get the new configuration; open connections keep theirs. On failure nothing
    /// changes.
    pub fn reload(&self) -> Result<(), Error> {
        let config = Arc::new(load(&self.files)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// An acceptor with the current configuration.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}
