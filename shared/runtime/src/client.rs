//! Calling other services: lazily connected channels, and an interceptor
//! that carries the W3C trace context and a bearer token, so one order is
//! one trace across services and every call is authenticated.
use crate::auth::TokenIssuer;
use oms_kernel::Tenant;
use opentelemetry::propagation::Injector;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// How long a unary call to a peer may take: a hung peer must not hold a
/// caller's transaction (the saga's, ingest's) forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel to a peer service, over TLS when its URL is `https://` (the
/// configuration makes sure it then has a CA to check the peer by).
pub fn peer(config: &crate::Config, service: crate::Service) -> anyhow::Result<Channel> {
    channel(config.peer_url(service), config.tls.as_ref())
}

/// A channel that connects on first use and reconnects by itself; unary
/// calls on it time out after [`CALL_TIMEOUT`]. An `https://` URL is
/// called with `tls`: the peer's certificate checked against its CA, and
/// this side's certificate presented (mutual TLS).
pub fn channel(url: &str, tls: Option<&crate::tls::TlsConfig>) -> anyhow::Result<Channel> {
    let https = url.starts_with("https://");
    let tls = match https {
        true => Some(
            (tls.and_then(|t| t.peer_client()))
                .ok_or_else(|| anyhow::anyhow!("{url}: https needs a TLS configuration"))?,
        ),
        false => None,
    };
    // An https URL is dialled as http with the port it means, through a
    // connector that speaks TLS itself (`tls_live`: renewed files are used
    // without a restart); tonic would refuse https without its own TLS.
    let url = match https {
        true => plain_url(url)?,
        false => url.to_owned(),
    };
    let endpoint = Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        // Feeds stream small events to the caller: see `crate::http2`.
        .initial_stream_window_size(crate::http2::STREAM_WINDOW)
        .initial_connection_window_size(crate::http2::CONNECTION_WINDOW);
    Ok(match tls {
        Some(config) => endpoint.connect_with_connector_lazy(tower::service_fn(move |uri| {
            crate::tls_live::connect(uri, config.clone())
        })),
        None => endpoint.connect_lazy(),
    })
}

/// `https://host[:port]/…` as `http://host:port/…`, the port said (443
/// when the URL says none).
fn plain_url(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse()?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("{url}: no host"))?;
    let port = uri.port_u16().unwrap_or(443);
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    let path = if path == "/" { "" } else { path };
    Ok(format!("http://{host}:{port}{path}"))
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Writes the current span's trace context into outgoing metadata.
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata))
    });
}

/// Interceptor for service-to-service calls on behalf of a tenant.
#[derive(Clone)]
pub struct Outbound {
    token: Arc<Token>,
}

/// How long a minted token is good for.
const TOKEN_TTL: Duration = Duration::from_secs(300);
/// A token this close to its expiry is renewed before a call: a call
/// started with it must still be accepted when it arrives.
const RENEW_BEFORE: u64 = 60;

/// A tenant's token, minted anew as it nears its expiry. Clients live as
/// long as what holds them (a WMS adapter's session, a channel's
/// availability watch): a token minted once when they were made expired
/// five minutes later, and every call after that was refused
/// (`TOKEN_EXPIRED`) until the session ended.
struct Token {
    issuer: TokenIssuer,
    tenant: Tenant,
    subject: String,
    /// The bearer header and its token's expiry (Unix seconds).
    current: Mutex<(MetadataValue<Ascii>, u64)>,
}

impl Token {
    fn mint(&self, now: u64) -> (MetadataValue<Ascii>, u64) {
        let token = self.issuer.mint(&self.tenant, &self.subject, TOKEN_TTL);
        let bearer =
            MetadataValue::try_from(format!("Bearer {token}")).expect("a JWT is printable ASCII");
        (bearer, now + TOKEN_TTL.as_secs())
    }

    /// The header to send now, renewed when the token is about to expire.
    fn bearer(&self) -> MetadataValue<Ascii> {
        let now = jsonwebtoken::get_current_timestamp();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if now + RENEW_BEFORE >= current.1 {
            *current = self.mint(now);
        }
        current.0.clone()
    }
}

impl Outbound {
    /// Calls carrying a short-lived token for `tenant` signed as `subject`,
    /// renewed before it expires.
    pub fn for_tenant(issuer: &TokenIssuer, tenant: &Tenant, subject: &str) -> Self {
        let token = Token {
            issuer: issuer.clone(),
            tenant: tenant.clone(),
            subject: subject.to_owned(),
            // Expired: the first call mints.
            current: Mutex::new((MetadataValue::from_static(""), 0)),
        };
        Self {
            token: Arc::new(token),
        }
    }
}

impl tonic::service::Interceptor for Outbound {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        inject_trace_context(req.metadata_mut());
        req.metadata_mut()
            .insert("authorization", self.token.bearer());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;
    use crate::config::{AuthConfig, DEV_JWT_SECRET, Secret};
    use tonic::service::Interceptor as _;

    /// The header a call through `out` carries, authenticated.
    fn sent(out: &mut Outbound, auth: &Authenticator) -> (String, crate::auth::Caller) {
        let req = out.call(Request::new(())).unwrap();
        let header = req.metadata().get("authorization").unwrap();
        let header = header.to_str().unwrap().to_owned();
        let caller = auth.authenticate(Some(&header)).unwrap();
        (header, caller)
    }

    #[test]
    fn a_long_lived_client_renews_its_token_before_it_expires() {
        let cfg = AuthConfig {
            jwt_secret: Secret::new(DEV_JWT_SECRET),
            issuer: "oms".into(),
            audience: "oms".into(),
        };
        let auth = Authenticator::new(&cfg);
        let tenant = Tenant::parse("acme").unwrap();
        let mut out = Outbound::for_tenant(&TokenIssuer::new(&cfg), &tenant, "adapter:a");
        let (first, caller) = sent(&mut out, &auth);
        assert_eq!(
            (caller.tenant, caller.subject.as_str()),
            (tenant, "adapter:a")
        );
        assert_eq!(sent(&mut out.clone(), &auth).0, first, "kept while fresh");

        // The token a minute from its expiry (as five minutes on): the
        // next call carries a new one.
        let now = jsonwebtoken::get_current_timestamp();
        *out.token.current.lock().unwrap() = (MetadataValue::from_static("Bearer old"), now + 59);
        let (renewed, _) = sent(&mut out, &auth);
        assert!(
            renewed != "Bearer old" && renewed.starts_with("Bearer "),
            "{renewed}"
        );
    }
}
