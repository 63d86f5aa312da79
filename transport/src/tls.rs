//! Optional TLS for TCP, with client certificates (rustls, ring provider).
//!
//! The agent's TCP listener is for testing and for hosts that reach guests over a network;
//! with TLS it authenticates both ends: the server presents its certificate, and a client
//! without a certificate signed by the configured client CA is refused during the handshake.
//! vsock and unix listeners ignore TLS (the hypervisor and file permissions authenticate
//! those). Clients select TLS with `tls+tcp://HOST:PORT` and verify the server against a CA;
//! the server name checked is HOST (a DNS name or an IP address in the certificate's SAN).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {}: {reason}", path.display())]
    Pem {
        /// Which file (certificate, key, CA).
        what: &'static str,
        /// Its path (empty for in-memory PEM).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration (key not matching the certificate, ...).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The host of a `tls+tcp://` URI is not a valid server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// A client certificate was given without its key, or the other way round.
    #[error("--tls-cert and --tls-key go together")]
    CertWithoutKey,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn roots(what: &'static str, path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(what, path, pem)? {
        store.add(c).map_err(|e| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(store)
}

/// Server-side TLS: our certificate and key, and the CA client certificates must chain to.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls { client certificates required }")
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for ServerTls {}

impl ServerTls {
    /// From PEM files: certificate chain, private key, client CA bundle.
    pub fn from_pem_files(
        cert: &Path,
        key_file: &Path,
        client_ca: &Path,
    ) -> Result<Self, TlsError> {
        let c = read("certificate", cert)?;
        let k = read("private key", key_file)?;
        let ca = read("client CA", client_ca)?;
        Self::build(
            certs("certificate", cert, &c)?,
            key(key_file, &k)?,
            roots("client CA", client_ca, &ca)?,
        )
    }

    /// From PEM text (tests, embedded material).
    pub fn from_pem(cert: &[u8], key_pem: &[u8], client_ca: &[u8]) -> Result<Self, TlsError> {
        let none = Path::new("");
        Self::build(
            certs("certificate", none, cert)?,
            key(none, key_pem)?,
            roots("client CA", none, client_ca)?,
        )
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_roots: RootCertStore,
    ) -> Result<Self, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        // gRPC needs HTTP/2; plain HTTP/1.1 clients (metrics) may use TLS too.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The acceptor for accepted TCP streams.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// Client-side TLS: the CA the server's certificate must chain to, and optionally our
/// client certificate and key.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// From PEM files: server CA bundle, and a client certificate chain and key (both or
    /// neither).
    pub fn from_pem_files(
        ca: &Path,
        cert: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let ca_pem = read("CA", ca)?;
        let identity = match (cert, key_file) {
            (Some(c), Some(k)) => {
                let cp = read("certificate", c)?;
                let kp = read("private key", k)?;
                Some((certs("certificate", c, &cp)?, key(k, &kp)?))
            }
            (None, None) => None,
            _ => return Err(TlsError::CertWithoutKey),
        };
        Self::build(roots("CA", ca, &ca_pem)?, identity)
    }

    /// From PEM text; `identity` is (certificate chain, key).
    pub fn from_pem(ca: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Self, TlsError> {
        let none = Path::new("");
        let identity = match identity {
            Some((c, k)) => Some((certs("certificate", none, c)?, key(none, k)?)),
            None => None,
        };
        Self::build(roots("CA", none, ca)?, identity)
    }

    fn build(
        roots: RootCertStore,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The connector, and the server name for `host`.
    pub fn connector(
        &self,
        host: &str,
    ) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), TlsError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::ServerName(host.to_string()))?;
        Ok((tokio_rustls::TlsConnector::from(self.config.clone()), name))
    }
}
