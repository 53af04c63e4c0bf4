//! TLS on the gRPC port and on calls to peers: mutual TLS between the
//! services in production, as the design asks (callers still authenticate
//! with their bearer token on top of it).
//!
//! The files are read and checked at start, with the rest of the
//! configuration, so that a wrong path or a key that does not match its
//! certificate stops the service with every problem listed instead of
//! failing the first handshake; then read again every
//! `OMS_TLS_RELOAD_INTERVAL_S` (default 60), so that a renewed certificate
//! or CA is used without a restart (see `tls_live`).
use crate::config::Secret;
use crate::tls_live::{HANDSHAKE_TIMEOUT, Live, Pem};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Whether callers must show a certificate the CA signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every connection must present one (mutual TLS): callers without a
    /// certificate of the CA cannot even open a connection.
    Required,
    /// A certificate, when presented, must be the CA's; callers without one
    /// connect and authenticate with their bearer token only (channel
    /// connectors and WMS adapters outside the cluster).
    Optional,
    /// Certificates are not asked for.
    None,
}

/// The service's TLS material (`OMS_TLS_*`), read at start.
#[derive(Clone)]
pub struct TlsConfig {
    /// `OMS_TLS_CERT_FILE` and `OMS_TLS_KEY_FILE` (PEM): served on the gRPC
    /// port, and presented to the peers this service calls over https.
    identity: Option<(Vec<u8>, Secret)>,
    /// `OMS_TLS_CA_FILE` (PEM, one or more certificates): what peers' server
    /// certificates and callers' client certificates are checked against.
    ca: Option<Vec<u8>>,
    /// `OMS_TLS_CLIENT_AUTH`: `required` (the default when a CA is given),
    /// `optional` or `none`.
    pub client_auth: ClientAuth,
    /// What the service's handshakes use, read again while it runs; none
    /// for the OTLP exporter's material, which is read once.
    live: Option<Reloading>,
}

/// The service's material in use, and where and how often to read it again.
#[derive(Clone)]
struct Reloading {
    live: Arc<Live>,
    /// The variables naming the files.
    paths: Vec<(&'static str, String)>,
    /// `OMS_TLS_RELOAD_INTERVAL_S`.
    every: Duration,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("serves_tls", &self.identity.is_some())
            .field("has_ca", &self.ca.is_some())
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

const CANNOT_SERVE: &str =
    "OMS_TLS_CERT_FILE / OMS_TLS_KEY_FILE / OMS_TLS_CA_FILE cannot serve TLS";

/// The longest `OMS_TLS_RELOAD_INTERVAL_S`: a day (a renewal comes weeks
/// ahead; and a timer of ~2^64 s would overflow).
const MAX_RELOAD_INTERVAL_S: u64 = 86_400;

/// A served certificate with less than this left (seconds) is warned of at
/// start.
const RENEW_WARNING: f64 = 7.0 * 86_400.0;

impl TlsConfig {
    /// Reads `OMS_TLS_*` through `get`; `None` when none is set. Problems
    /// are pushed to `errors`.
    pub(crate) fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        errors: &mut Vec<String>,
    ) -> Option<TlsConfig> {
        let auth = get("OMS_TLS_CLIENT_AUTH");
        let Some((identity, not_after, ca)) = material(get, errors, SERVICE_FILES) else {
            if let Some(a) = auth {
                errors.push(format!(
                    "OMS_TLS_CLIENT_AUTH={a:?} needs OMS_TLS_CERT_FILE, OMS_TLS_KEY_FILE and OMS_TLS_CA_FILE"
                ));
            }
            return None;
        };
        let client_auth = match auth.as_deref() {
            None if ca.is_some() => ClientAuth::Required,
            None | Some("none") => ClientAuth::None,
            Some("required") => ClientAuth::Required,
            Some("optional") => ClientAuth::Optional,
            Some(other) => {
                errors.push(format!(
                    "OMS_TLS_CLIENT_AUTH={other:?}: use required, optional or none"
                ));
                ClientAuth::None
            }
        };
        let paths: Vec<(&'static str, String)> =
            [SERVICE_FILES.cert, SERVICE_FILES.key, SERVICE_FILES.ca]
                .into_iter()
                .filter_map(|k| get(k).map(|v| (k, v)))
                .collect();
        let reload = get("OMS_TLS_RELOAD_INTERVAL_S").unwrap_or_else(|| "60".into());
        let every = match reload.parse::<u64>() {
            Ok(s) if (1..=MAX_RELOAD_INTERVAL_S).contains(&s) => Duration::from_secs(s),
            _ => {
                errors.push(format!(
                    "OMS_TLS_RELOAD_INTERVAL_S={reload:?}: a whole number of seconds, 1 to {MAX_RELOAD_INTERVAL_S}"
                ));
                Duration::from_secs(60)
            }
        };
        let mut tls = TlsConfig {
            identity,
            ca,
            client_auth,
            live: None,
        };
        if tls.client_auth != ClientAuth::None && tls.ca.is_none() {
            errors.push(
                "OMS_TLS_CLIENT_AUTH checks client certificates against OMS_TLS_CA_FILE, which is not set"
                    .into(),
            );
        }
        // A key that is not the certificate's is found now, with the other
        // problems, rather than at the first handshake.
        let pem = pem_of(tls.identity.clone(), tls.ca.clone());
        match Live::new(pem, not_after, tls.client_auth) {
            Ok(live) => {
                let live = Arc::new(live);
                tls.live = Some(Reloading { live, paths, every });
            }
            Err(e) => errors.push(format!("{CANNOT_SERVE}: {e}")),
        }
        Some(tls)
    }

    /// Reads the files again and uses them for new handshakes when they
    /// changed; true when they did. Files that cannot be used (half
    /// written, a key of another certificate, an expired certificate)
    /// change nothing and say why: what is in use stays.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(Reloading { live, paths, .. }) = &self.live else {
            return Ok(false);
        };
        let get = |k: &str| paths.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let mut errors = vec![];
        let read = material(&get, &mut errors, SERVICE_FILES);
        let Some((identity, not_after, ca)) = read.filter(|_| errors.is_empty()) else {
            return Err(errors.join("; "));
        };
        live.replace(pem_of(identity, ca), not_after)
            .map_err(|e| format!("{}: {e}", CANNOT_SERVE))
    }

    /// What an `https://` OTLP collector is called with: the standard
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` (a CA to trust besides the public
    /// ones), `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
    /// `OTEL_EXPORTER_OTLP_CLIENT_KEY` (a client certificate, when the
    /// collector asks for one); `None` when none is set.
    pub(crate) fn otlp_from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        errors: &mut Vec<String>,
    ) -> Option<TlsConfig> {
        let (identity, _, ca) = material(get, errors, OTLP_FILES)?;
        Some(TlsConfig {
            identity,
            ca,
            client_auth: ClientAuth::None,
            live: None,
        })
    }

    /// Whether the gRPC port serves TLS (a certificate and key are set).
    pub fn serves_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// The server side, read again while the service runs: this service's
    /// certificate, and the callers' certificates checked as
    /// `client_auth` says; none when it serves no TLS.
    pub fn server(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.identity.as_ref()?;
        Some(self.live.as_ref()?.live.server_config())
    }

    /// The side of calls to `https://` peers, read again while the service
    /// runs: the peer's certificate checked against the CA (and its name
    /// against the URL's host), this service's certificate presented when
    /// it has one.
    pub fn peer_client(&self) -> Option<Arc<rustls::ClientConfig>> {
        Some(self.live.as_ref()?.live.client_config())
    }

    /// tonic's client side, read once: for the OTLP exporter, which builds
    /// its own channel.
    pub fn client(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key.expose()));
        }
        config
    }

    /// Seconds until the served certificate expires (negative once it
    /// has), the one in use now: a renewal the files never got (a stuck
    /// cert-manager, a Secret not mounted) shows here before callers are
    /// refused.
    pub fn expires_in(&self) -> Option<f64> {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let not_after = self.live.as_ref()?.live.not_after();
        not_after.map(|t| t as f64 - now)
    }

    /// While the returned watch lives, the files are read again every
    /// `OMS_TLS_RELOAD_INTERVAL_S` (a change is logged, a file that cannot be used is
    /// warned of and the material in use kept), and
    /// `oms.tls.certificate.expiry` tells the time left on the certificate
    /// served (none when it serves none); less than a week left is warned
    /// of now, as the alert rules do.
    pub fn watch(self, service: &'static str) -> TlsWatch {
        let reloads = self.live.as_ref().map(|r| {
            let (tls, every) = (self.clone(), r.every);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    // File reads block: off the runtime's workers (a slow
                    // volume would stall the calls they serve).
                    let again = tls.clone();
                    let reloaded = tokio::task::spawn_blocking(move || again.reload()).await;
                    match reloaded.unwrap_or_else(|e| Err(e.to_string())) {
                        Ok(false) => {}
                        Ok(true) => tracing::info!(
                            days_left = tls.expires_in().map(|s| s / 86_400.0),
                            "TLS files changed: new connections use them"
                        ),
                        Err(e) => tracing::warn!(
                            error = %e,
                            "TLS files changed but cannot be used; the ones in use stay"
                        ),
                    }
                }
            })
        });
        let gauge = self.expires_in().map(|left| {
            if left < RENEW_WARNING {
                tracing::warn!(
                    days = left / 86_400.0,
                    "the TLS certificate served expires soon; renew it"
                );
            }
            crate::metrics::certificate_expiry(service, self)
        });
        TlsWatch {
            reloads,
            _gauge: gauge,
        }
    }

    /// Whether `https://` peers can be checked (a CA is set).
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }
}

/// The files' contents as `tls_live` takes them.
fn pem_of(identity: Option<(Vec<u8>, Secret)>, ca: Option<Vec<u8>>) -> Pem {
    let identity = identity.map(|(cert, key)| (cert, key.expose().as_bytes().to_vec()));
    Pem { identity, ca }
}

/// Reads the TLS files again and reports their expiry until dropped.
pub struct TlsWatch {
    reloads: Option<tokio::task::JoinHandle<()>>,
    _gauge: Option<opentelemetry::metrics::ObservableGauge<f64>>,
}

impl Drop for TlsWatch {
    fn drop(&mut self) {
        if let Some(task) = &self.reloads {
            task.abort();
        }
    }
}

/// The variables naming a certificate, its key and a CA.
struct Files {
    cert: &'static str,
    key: &'static str,
    ca: &'static str,
}

const SERVICE_FILES: Files = Files {
    cert: "OMS_TLS_CERT_FILE",
    key: "OMS_TLS_KEY_FILE",
    ca: "OMS_TLS_CA_FILE",
};

const OTLP_FILES: Files = Files {
    cert: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    key: "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    ca: "OTEL_EXPORTER_OTLP_CERTIFICATE",
};

/// A certificate with its key (and its expiry), and a CA, read from the
/// files `names` point to; `None` when none is set.
#[allow(clippy::type_complexity)]
fn material(
    get: &impl Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
    names: Files,
) -> Option<(Option<(Vec<u8>, Secret)>, Option<i64>, Option<Vec<u8>>)> {
    let (cert, key, ca) = (get(names.cert), get(names.key), get(names.ca));
    if cert.is_none() && key.is_none() && ca.is_none() {
        return None;
    }
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => {
            let cert = read(errors, names.cert, &cert, certificates);
            let key = read(errors, names.key, &key, private_key);
            cert.zip(key)
                .map(|(c, k)| (c, Secret::new(String::from_utf8_lossy(&k))))
        }
        (None, None) => None,
        _ => {
            errors.push(format!("{} and {} go together", names.cert, names.key));
            None
        }
    };
    let not_after = identity.as_ref().and_then(|(cert, _)| expiry(cert));
    if let Some(t) = not_after.filter(|t| *t <= chrono::Utc::now().timestamp()) {
        let when = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
        errors.push(format!("{}: the certificate expired at {when}", names.cert));
    }
    let ca = ca.and_then(|ca| read(errors, names.ca, &ca, certificates));
    Some((identity, not_after, ca))
}

/// Reads a PEM file and checks it with `check`; `None` (and an error
/// naming the variable) when either fails.
fn read(
    errors: &mut Vec<String>,
    key: &str,
    path: &str,
    check: fn(&[u8]) -> Result<(), String>,
) -> Option<Vec<u8>> {
    let problem = match std::fs::read(path) {
        Ok(pem) => match check(&pem) {
            Ok(()) => return Some(pem),
            Err(e) => e,
        },
        Err(e) => e.to_string(),
    };
    errors.push(format!("{key}={path:?}: {problem}"));
    None
}

/// When the first certificate of `pem` (the service's own, before any
/// chain) expires.
fn expiry(pem: &[u8]) -> Option<i64> {
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn certificates(pem: &[u8]) -> Result<(), String> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

fn private_key(pem: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(|_| ())
        .map_err(|e| format!("holds no PEM private key: {e}"))
}
