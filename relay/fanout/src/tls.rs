//! TLS for both binaries (rustls): a certificate and key read from PEM files, served through a
//! resolver whose certificate is swapped atomically, so a reload never touches connections
//! already established (they keep the session they negotiated) while every new handshake gets
//! the new certificate.
//!
//! [`TlsArgs`] is the configuration both binaries flatten (`VEXIL_TLS_CERT`, `VEXIL_TLS_KEY`);
//! [`ReloadingTls`] loads the files and reloads them on `SIGHUP` and whenever they change on
//! disk (checked every [`TlsArgs::tls_reload_interval`]); a reload that fails keeps serving
//! the previous certificate and logs why. [`TlsListener`] is an [`axum::serve::Listener`]
//! that accepts TCP connections and completes handshakes off the accept loop, so a slow or
//! hostile client never holds up the others.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use clap::Args;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A handshake that has not finished after this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS options shared by `vexil-server` and `vexil-relay`. TLS is on when both files are
/// given.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[non_exhaustive]
pub struct TlsArgs {
    /// PEM file with the certificate chain to serve HTTPS with (leaf first). Reloaded on
    /// SIGHUP and when the file changes.
    #[arg(long, env = "VEXIL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "VEXIL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate and key files are checked for changes.
    #[arg(long, env = "VEXIL_TLS_RELOAD_INTERVAL", default_value = "10s",
          value_parser = crate::config::parse_duration)]
    pub tls_reload_interval: Duration,
}

impl Default for TlsArgs {
    /// TLS off, files checked every ten seconds once on.
    fn default() -> Self {
        Self {
            tls_cert: None,
            tls_key: None,
            tls_reload_interval: Duration::from_secs(10),
        }
    }
}

impl TlsArgs {
    /// The certificate and key files, when TLS is configured.
    pub fn files(&self) -> Option<(PathBuf, PathBuf)> {
        Some((self.tls_cert.clone()?, self.tls_key.clone()?))
    }
}

/// Why the certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the key or the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The current certificate, swapped on reload.
#[derive(Debug)]
struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What a loaded pair of files looked like, to notice a change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    cert: Vec<u8>,
    key: Vec<u8>,
}

struct Inner {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    loaded: std::sync::Mutex<Stamp>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// A server TLS configuration that follows its certificate and key files. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadingTls {
    inner: Arc<Inner>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certified_key(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
    stamp: &Stamp,
) -> Result<CertifiedKey, TlsError> {
    let pem = |path: &Path, what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(&stamp.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert_path, format!("not a PEM certificate chain ({e})")))?;
    if certs.is_empty() {
        return Err(pem(cert_path, "no CERTIFICATE in the file".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(&stamp.key)
        .map_err(|e| pem(key_path, format!("no usable PRIVATE KEY ({e})")))?;
    let signing = provider.key_provider.load_private_key(key)?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()?;
    Ok(ck)
}

impl ReloadingTls {
    /// Loads `cert` and `key`; `alpn` lists the protocols offered (e.g. `h2`, `http/1.1`).
    pub fn load(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = Stamp {
            cert: read(cert)?,
            key: read(key)?,
        };
        let ck = certified_key(&provider, cert, key, &stamp)?;
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(ck),
        });
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            inner: Arc::new(Inner {
                cert_path: cert.to_owned(),
                key_path: key.to_owned(),
                provider,
                resolver,
                loaded: std::sync::Mutex::new(stamp),
                acceptor: TlsAcceptor::from(Arc::new(config)),
            }),
        })
    }

    /// Reads the files again and, if they changed and are valid, serves the new certificate
    /// to every new handshake. `Ok(true)` when the certificate changed.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let i = &self.inner;
        let stamp = Stamp {
            cert: read(&i.cert_path)?,
            key: read(&i.key_path)?,
        };
        {
            let loaded = i.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if *loaded == stamp {
                return Ok(false);
            }
        }
        let ck = certified_key(&i.provider, &i.cert_path, &i.key_path, &stamp)?;
        i.resolver.current.store(Arc::new(ck));
        *i.loaded.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        tracing::info!(cert = %i.cert_path.display(), "TLS certificate reloaded");
        Ok(true)
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.inner.acceptor.clone()
    }

    /// Reloads on `SIGHUP` and when the files change (checked every `interval`), until every
    /// clone of `self` is dropped. A failed reload keeps the current certificate.
    pub fn watch(&self, interval: Duration) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        // Registered before returning: a SIGHUP sent once serving has begun is never lost
        // (nor does it terminate the process, the signal's default action).
        let mut hangup = hangup();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    _ = tick.tick() => "file check",
                    Some(()) = recv(&mut hangup) => "SIGHUP",
                };
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = (ReloadingTls { inner }).reload() {
                    tracing::error!(error = %e, trigger = why,
                        "TLS reload failed: still serving the previous certificate");
                }
            }
        });
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: TLS reloads on file changes only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv(h: &mut Hangup) -> Option<()> {
    match h {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

/// A TCP listener whose connections are TLS sessions. Handshakes run in their own tasks;
/// `accept` returns the next that completed.
#[derive(Debug)]
pub struct TlsListener {
    tcp: TcpListener,
    tls: ReloadingTls,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves TLS with `tls` on `tcp`.
    pub fn new(tcp: TcpListener, tls: ReloadingTls) -> Self {
        Self {
            tcp,
            tls,
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        if let Err(e) = tcp.set_nodelay(true) {
                            tracing::debug!(error = %e, "set_nodelay failed");
                        }
                        let acceptor = self.tls.acceptor();
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(s)) => Some((s, addr)),
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, %addr, "TLS handshake failed");
                                    None
                                }
                                Err(_) => None,
                            }
                        });
                    }
                    Err(e) => {
                        let kind = crate::serve::accept_error_kind(&e);
                        metrics::counter!(crate::metrics::ACCEPT_ERRORS, "kind" => kind).increment(1);
                        tracing::warn!(error = %e, kind, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(session)) = done {
                        return session;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    fn pair() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn served(tls: &ReloadingTls) -> Vec<u8> {
        tls.inner.resolver.current.load().cert[0].to_vec()
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c1, k1) = pair();
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let tls = ReloadingTls::load(&cert, &key, &[b"http/1.1"]).unwrap();
        let first = served(&tls);
        assert!(!tls.reload().unwrap(), "unchanged files: nothing to do");

        let (c2, k2) = pair();
        std::fs::write(&cert, &c2).unwrap();
        std::fs::write(&key, &k2).unwrap();
        assert!(tls.reload().unwrap());
        let second = served(&tls);
        assert_ne!(first, second);

        // A key that does not match the certificate, then a file that is not PEM: refused,
        // the working certificate stays.
        std::fs::write(&key, &k1).unwrap();
        assert!(tls.reload().is_err());
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, &k2).unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(served(&tls), second);
        // And a start with broken files fails rather than serving nothing.
        assert!(ReloadingTls::load(&cert, &key, &[]).is_err());
    }
}
