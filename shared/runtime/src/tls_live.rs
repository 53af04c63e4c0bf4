//! TLS material read again while the service runs. cert-manager renews a
//! certificate by rewriting its Secret, and the kubelet updates the
//! mounted files in place; with this, new connections get the renewed
//! certificate (served, and presented to peers) and a renewed CA is
//! trusted, without a restart. Connections already open keep what they
//! began with.
//!
//! tonic's own TLS settings are fixed once a server or channel is built,
//! so the server accepts TLS itself ([`accept`]) and peers are called
//! through a connector of ours ([`connector`]), both with rustls, the
//! library tonic uses, asking [`Live`] for the certificate and the CA at
//! each handshake.
use crate::tls::ClientAuth;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A handshake that has not finished by then is dropped, so a client that
/// connects and says nothing holds no more than a socket for a while.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files, as read once.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Pem {
    /// Certificate (with its chain) and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub ca: Option<Vec<u8>>,
}

/// What handshakes use now.
struct Loaded {
    pem: Pem,
    key: Option<Arc<CertifiedKey>>,
    /// When the certificate expires (Unix seconds).
    not_after: Option<i64>,
    /// Client certificates checked against the CA.
    clients: Option<Arc<dyn ClientCertVerifier>>,
    /// Peers' server certificates checked against the CA (and their
    /// names against the host called).
    servers: Option<Arc<dyn ServerCertVerifier>>,
}

/// The certificate, key and CA of a service, swapped whole when the files
/// change.
pub struct Live {
    provider: Arc<CryptoProvider>,
    client_auth: ClientAuth,
    current: RwLock<Arc<Loaded>>,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// From the files' contents; Err says what cannot be used (a key that
    /// is not the certificate's, a CA rustls does not take).
    pub(crate) fn new(
        pem: Pem,
        not_after: Option<i64>,
        client_auth: ClientAuth,
    ) -> Result<Live, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load(&provider, pem, not_after)?;
        Ok(Live {
            provider,
            client_auth,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    fn now(&self) -> Arc<Loaded> {
        // A poisoned lock still holds a whole, valid value: it is only
        // ever replaced, never changed in place.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the files' contents when they differ from what is in use and
    /// can be used; true when they were taken.
    pub(crate) fn replace(&self, pem: Pem, not_after: Option<i64>) -> Result<bool, String> {
        if self.now().pem == pem {
            return Ok(false);
        }
        let loaded = Arc::new(load(&self.provider, pem, not_after)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(true)
    }

    /// When the certificate in use expires (Unix seconds).
    pub(crate) fn not_after(&self) -> Option<i64> {
        self.now().not_after
    }

    /// The server side: this certificate, callers' certificates checked as
    /// `client_auth` says; HTTP/2 only, as gRPC is.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let clients: Arc<dyn ClientCertVerifier> = match self.client_auth {
            ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
            _ => self.clone(),
        };
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_client_cert_verifier(clients)
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// The client side, for `https://` peers: their certificates checked
    /// against the CA, this certificate presented when there is one.
    pub fn client_config(self: &Arc<Self>) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_client_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }
}

fn load(
    provider: &Arc<CryptoProvider>,
    pem: Pem,
    not_after: Option<i64>,
) -> Result<Loaded, String> {
    let certs = |pem: &[u8]| -> Result<Vec<CertificateDer<'static>>, String> {
        CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("not a PEM certificate: {e}"))
    };
    let key = match &pem.identity {
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("no PEM key: {e}"))?;
            let certified = CertifiedKey::from_der(certs(cert)?, key, provider)
                .map_err(|e| format!("the key cannot serve the certificate: {e}"))?;
            Some(Arc::new(certified))
        }
        None => None,
    };
    let (mut clients, mut servers) = (None, None);
    if let Some(ca) = &pem.ca {
        let mut roots = RootCertStore::empty();
        for cert in certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("a CA certificate: {e}"))?;
        }
        let roots = Arc::new(roots);
        let c = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("the CA cannot check clients: {e}"))?;
        let s = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("the CA cannot check servers: {e}"))?;
        let s: Arc<dyn ServerCertVerifier> = s;
        (clients, servers) = (Some(c), Some(s));
    }
    Ok(Loaded {
        pem,
        key,
        not_after,
        clients,
        servers,
    })
}

fn no_ca() -> rustls::Error {
    rustls::Error::General("no CA to check certificates by (OMS_TLS_CA_FILE)".into())
}

impl ResolvesServerCert for Live {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.now().key.clone()
    }
}

impl ResolvesClientCert for Live {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.now().key.clone()
    }

    fn has_certs(&self) -> bool {
        self.now().key.is_some()
    }
}

impl ClientCertVerifier for Live {
    fn client_auth_mandatory(&self) -> bool {
        self.client_auth == ClientAuth::Required
    }

    /// No hints: a caller shows the one certificate it has.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let clients = self.now().clients.clone().ok_or_else(no_ca)?;
        clients.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        (self.provider.signature_verification_algorithms).supported_schemes()
    }
}

impl ServerCertVerifier for Live {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let servers = self.now().servers.clone().ok_or_else(no_ca)?;
        servers.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ClientCertVerifier::supported_verify_schemes(self)
    }
}

/// TLS connections out of plain ones, each handshake on its own task so
/// that a slow client holds up no other; a connection whose handshake
/// fails or times out is dropped (the client sees why). Ends when the
/// server drops the stream.
pub fn accept(
    mut incoming: impl Stream<Item = std::io::Result<TcpStream>> + Send + Unpin + 'static,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                _ = tx.closed() => return,
                next = incoming.next() => match next {
                    None => return,
                    Some(Ok(tcp)) => tcp,
                    Some(Err(e)) => {
                        // Out of file descriptors, say: pause rather than
                        // spin on the same error.
                        tracing::warn!(error = %e, "could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Connects to `uri`'s host and port over TLS as `config` says, checking
/// the peer's certificate against the host's name.
pub async fn connect(
    uri: http::Uri,
    config: Arc<ClientConfig>,
) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, BoxError> {
    let host = uri.host().ok_or("the peer URL names no host")?;
    // IPv6 literals come bracketed in URIs.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host)?;
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| "TLS handshake timed out")??;
    Ok(TokioIo::new(tls))
}
