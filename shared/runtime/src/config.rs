//! Configuration: defaults, then `OMS_*` environment variables, validated
//! at start. Every problem is reported at once; secrets are never printed.
use std::{fmt, net::SocketAddr, time::Duration};

/// The eight services, in the order of the design (which is also the order
/// of their default ports, 50051 to 50058).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Ingest,
    Orders,
    Inventory,
    Routing,
    Fulfillment,
    Returns,
    Billing,
    Notifications,
}

impl Service {
    pub const ALL: [Service; 8] = [
        Service::Ingest,
        Service::Orders,
        Service::Inventory,
        Service::Routing,
        Service::Fulfillment,
        Service::Returns,
        Service::Billing,
        Service::Notifications,
    ];

    /// Lower-case name: binary `oms-<name>`, schema `<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Ingest => "ingest",
            Service::Orders => "orders",
            Service::Inventory => "inventory",
            Service::Routing => "routing",
            Service::Fulfillment => "fulfillment",
            Service::Returns => "returns",
            Service::Billing => "billing",
            Service::Notifications => "notifications",
        }
    }

    pub fn default_port(self) -> u16 {
        50051 + Service::ALL.iter().position(|s| *s == self).unwrap_or(0) as u16
    }

    fn env_prefix(self) -> String {
        format!("OMS_{}", self.name().to_uppercase())
    }
}

/// A secret value: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `OMS_DATABASE_URL`.
    pub url: String,
    /// `OMS_DATABASE_SCHEMA`, default the service name.
    pub schema: String,
    /// `OMS_DATABASE_MAX_CONNECTIONS`, default 10.
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `OMS_REDIS_URL`, used when no cluster nodes are given.
    pub url: String,
    /// `OMS_REDIS_CLUSTER_NODES`: comma-separated `redis://host:port` seeds;
    /// when set the service talks Redis Cluster.
    pub cluster_nodes: Vec<String>,
    /// `OMS_REDIS_KEY_PREFIX`: prepended to every key (tests use one per test).
    pub key_prefix: String,
    /// `OMS_REDIS_MIN_REPLICAS`, default 0: how many replicas of the node
    /// must have a write (`WAIT`) before a service that asks for it counts
    /// the write as made; so a failover to one of them loses none of it.
    pub min_replicas: u32,
    /// `OMS_REDIS_REPLICA_TIMEOUT_MS`, default 100: how long to wait for
    /// them before the write counts as failed.
    pub replica_timeout: Duration,
}

/// The shared secret that signs and checks bearer tokens (HS256).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `OMS_AUTH_JWT_SECRET`.
    pub jwt_secret: Secret,
    /// `OMS_AUTH_ISSUER`, default `oms`.
    pub issuer: String,
    /// `OMS_AUTH_AUDIENCE`, default `oms`.
    pub audience: String,
}

/// The development secret: fine on a laptop, refused when
/// `OMS_ENVIRONMENT=production`.
pub const DEV_JWT_SECRET: &str = "oms-local-development-secret-change-me";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `OMS_REQUEST_TIMEOUT_MS`, default 30000: unary calls running longer
    /// are cancelled (streams are not limited: `crate::deadline`).
    pub request_timeout: Duration,
    /// `OMS_CONCURRENCY_LIMIT`, default 1024: requests in flight per
    /// process; beyond it calls are shed with UNAVAILABLE.
    pub concurrency_limit: usize,
    /// `OMS_SHUTDOWN_GRACE_MS`, default 20000: how long in-flight calls may
    /// drain after SIGTERM.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `OMS_LOG_FORMAT`: `json` (default) or `pretty`.
    pub format: LogFormat,
    /// `OMS_LOG` (or `RUST_LOG`): a tracing filter, default `info`.
    pub filter: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: when set, traces and metrics are
    /// exported there over OTLP/gRPC.
    pub otlp_endpoint: Option<String>,
    /// For an `https://` endpoint: `OTEL_EXPORTER_OTLP_CERTIFICATE` (a CA
    /// trusted besides the public ones) and a client certificate
    /// (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `..._CLIENT_KEY`).
    pub otlp_tls: Option<crate::tls::TlsConfig>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: Service,
    /// `OMS_LISTEN_ADDR`, default `0.0.0.0:<default port>`.
    pub listen_addr: SocketAddr,
    pub database: DbConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
    /// `OMS_SWEEP_INTERVAL_MS`, default 1000: how often background sweeps
    /// (expired reservations...) run.
    pub sweep_interval: Duration,
    /// `OMS_RESERVATION_RETENTION_DAYS`, default 90: how long a finished
    /// (released, expired, consumed) reservation is kept before it is
    /// deleted; `None` (0) keeps them forever. At least a day, so that the
    /// gate (which keeps a finished reservation an hour) has long
    /// forgotten one before its record goes.
    pub reservation_retention: Option<Duration>,
    /// `OMS_EVENT_RETENTION_DAYS`, default 30: how long an event stays in
    /// the service's feed (its outbox) before it is deleted; `None` (0)
    /// keeps events forever. A reader whose cursor the retention overtook
    /// is told (`CURSOR_EXPIRED`), never silently skipped ahead.
    pub event_retention: Option<Duration>,
    /// `OMS_IDEMPOTENCY_RETENTION_DAYS`, default 30: how long the answer
    /// of a mutating request is kept for repeats of its `request_id`;
    /// `None` (0) keeps them forever. A repeat after it is a new request.
    pub idempotency_retention: Option<Duration>,
    /// `OMS_<SERVICE>_URL` for every service, default
    /// `http://127.0.0.1:<its port>`: where this service calls its peers.
    pub peers: Vec<(Service, String)>,
    /// `OMS_TLS_*`: TLS on the gRPC port and to `https://` peers.
    pub tls: Option<crate::tls::TlsConfig>,
    /// `OMS_TLS_OFFLOADED=true`: a service mesh (Linkerd, Istio) encrypts
    /// and authenticates the pod's traffic, so production may run without
    /// `OMS_TLS_*`.
    pub tls_offloaded: bool,
    /// `OMS_HEALTH_LISTEN_ADDR`: a second, plaintext port that serves only
    /// `grpc.health.v1`, for probes that cannot speak TLS (the kubelet's).
    pub health_listen_addr: Option<SocketAddr>,
}

impl Config {
    pub fn from_env(service: Service) -> Result<Config, ConfigError> {
        Self::from_lookup(service, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Builds the configuration from any key lookup (tests pass a map).
    pub fn from_lookup(
        service: Service,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let parse = |key: &str, default: &str| get(key).unwrap_or_else(|| default.to_owned());
        let listen = parse(
            "OMS_LISTEN_ADDR",
            &format!("0.0.0.0:{}", service.default_port()),
        );
        let db_url = parse("OMS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/oms");
        let schema = parse("OMS_DATABASE_SCHEMA", service.name());
        let max_conn = parse("OMS_DATABASE_MAX_CONNECTIONS", "10");
        let redis_url = parse("OMS_REDIS_URL", "redis://127.0.0.1:6379");
        let cluster = parse("OMS_REDIS_CLUSTER_NODES", "");
        let prefix = parse("OMS_REDIS_KEY_PREFIX", "");
        let replicas = parse("OMS_REDIS_MIN_REPLICAS", "0");
        let replica_wait = parse("OMS_REDIS_REPLICA_TIMEOUT_MS", "100");
        let secret = get("OMS_AUTH_JWT_SECRET");
        let environment = parse("OMS_ENVIRONMENT", "development");
        let issuer = parse("OMS_AUTH_ISSUER", "oms");
        let audience = parse("OMS_AUTH_AUDIENCE", "oms");
        let timeout = parse("OMS_REQUEST_TIMEOUT_MS", "30000");
        let limit = parse("OMS_CONCURRENCY_LIMIT", "1024");
        let grace = parse("OMS_SHUTDOWN_GRACE_MS", "20000");
        let format = parse("OMS_LOG_FORMAT", "json");
        let sweep = parse("OMS_SWEEP_INTERVAL_MS", "1000");
        let retention = parse("OMS_RESERVATION_RETENTION_DAYS", "90");
        let event_retention = parse("OMS_EVENT_RETENTION_DAYS", "30");
        let request_retention = parse("OMS_IDEMPOTENCY_RETENTION_DAYS", "30");
        let filter = get("OMS_LOG")
            .or_else(|| get("RUST_LOG"))
            .unwrap_or_else(|| "info,sqlx::postgres::notice=warn".into());
        let tls = crate::tls::TlsConfig::from_lookup(&get, &mut errors);
        let otlp_tls = crate::tls::TlsConfig::otlp_from_lookup(&get, &mut errors);
        // With a CA to check them by, peers are called over TLS by default
        // (they serve it as this service does).
        let scheme = match &tls {
            Some(t) if t.has_ca() => "https",
            _ => "http",
        };
        let peers: Vec<(Service, String)> = Service::ALL
            .iter()
            .map(|s| {
                let key = format!("{}_URL", s.env_prefix());
                let url = get(&key)
                    .unwrap_or_else(|| format!("{scheme}://127.0.0.1:{}", s.default_port()));
                (*s, url)
            })
            .collect();
        let offloaded = parse("OMS_TLS_OFFLOADED", "false");
        let health_listen = get("OMS_HEALTH_LISTEN_ADDR");

        let listen_addr = listen
            .parse::<SocketAddr>()
            .map_err(|e| errors.push(format!("OMS_LISTEN_ADDR={listen:?}: {e}")))
            .ok();
        if !db_url.starts_with("postgres://") && !db_url.starts_with("postgresql://") {
            errors.push("OMS_DATABASE_URL must be a postgres:// URL".into());
        }
        if !is_identifier(&schema) {
            errors.push(format!(
                "OMS_DATABASE_SCHEMA={schema:?}: must be a lower-case SQL identifier"
            ));
        }
        let max_connections =
            number::<u32>(&mut errors, "OMS_DATABASE_MAX_CONNECTIONS", &max_conn, 1);
        let request_timeout = number::<u64>(&mut errors, "OMS_REQUEST_TIMEOUT_MS", &timeout, 1);
        let concurrency_limit = number::<usize>(&mut errors, "OMS_CONCURRENCY_LIMIT", &limit, 1);
        let shutdown_grace = number::<u64>(&mut errors, "OMS_SHUTDOWN_GRACE_MS", &grace, 0);
        let sweep_interval = number::<u64>(&mut errors, "OMS_SWEEP_INTERVAL_MS", &sweep, 10);
        let retention_days =
            number::<u64>(&mut errors, "OMS_RESERVATION_RETENTION_DAYS", &retention, 0);
        let event_days =
            number::<u64>(&mut errors, "OMS_EVENT_RETENTION_DAYS", &event_retention, 0);
        let request_days = number::<u64>(
            &mut errors,
            "OMS_IDEMPOTENCY_RETENTION_DAYS",
            &request_retention,
            0,
        );
        let min_replicas = number::<u32>(&mut errors, "OMS_REDIS_MIN_REPLICAS", &replicas, 0);
        let replica_timeout = number::<u64>(
            &mut errors,
            "OMS_REDIS_REPLICA_TIMEOUT_MS",
            &replica_wait,
            1,
        );
        let cluster_nodes: Vec<String> = cluster
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        for url in std::iter::once(&redis_url).chain(&cluster_nodes) {
            if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                errors.push(format!(
                    "Redis URL {url:?} must start with redis:// or rediss://"
                ));
            }
        }
        let jwt_secret = match (secret, environment.as_str()) {
            (Some(s), _) if s.len() < 32 => {
                errors.push("OMS_AUTH_JWT_SECRET must be at least 32 characters".into());
                Secret::new(s)
            }
            (Some(s), _) => Secret::new(s),
            (None, "production") => {
                errors
                    .push("OMS_AUTH_JWT_SECRET is required when OMS_ENVIRONMENT=production".into());
                Secret::new("")
            }
            (None, _) => Secret::new(DEV_JWT_SECRET),
        };
        let format = match format.as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                errors.push(format!("OMS_LOG_FORMAT={other:?}: use json or pretty"));
                LogFormat::Json
            }
        };
        for (s, url) in &peers {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                errors.push(format!(
                    "{}_URL={url:?}: must be an http(s):// URL",
                    s.env_prefix()
                ));
            }
            if url.starts_with("https://") && !tls.as_ref().is_some_and(|t| t.has_ca()) {
                errors.push(format!(
                    "{}_URL={url:?}: an https:// peer needs OMS_TLS_CA_FILE to check its certificate",
                    s.env_prefix()
                ));
            }
        }
        let tls_offloaded = match offloaded.as_str() {
            "true" => true,
            "false" => false,
            other => {
                errors.push(format!("OMS_TLS_OFFLOADED={other:?}: use true or false"));
                false
            }
        };
        let serves_tls = tls.as_ref().is_some_and(|t| t.serves_tls());
        if environment == "production" && !serves_tls && !tls_offloaded {
            errors.push(
                "OMS_ENVIRONMENT=production needs TLS: set OMS_TLS_CERT_FILE, OMS_TLS_KEY_FILE and OMS_TLS_CA_FILE, \
                 or OMS_TLS_OFFLOADED=true when a service mesh encrypts the pod's traffic"
                    .into(),
            );
        }
        let health_listen_addr = health_listen.and_then(|a| {
            a.parse::<SocketAddr>()
                .map_err(|e| errors.push(format!("OMS_HEALTH_LISTEN_ADDR={a:?}: {e}")))
                .ok()
        });
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Config {
            service,
            listen_addr: listen_addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
            database: DbConfig {
                url: db_url,
                schema,
                max_connections,
            },
            redis: RedisConfig {
                url: redis_url,
                cluster_nodes,
                key_prefix: prefix,
                min_replicas,
                replica_timeout: Duration::from_millis(replica_timeout),
            },
            auth: AuthConfig {
                jwt_secret,
                issuer,
                audience,
            },
            server: ServerConfig {
                request_timeout: Duration::from_millis(request_timeout),
                concurrency_limit,
                shutdown_grace: Duration::from_millis(shutdown_grace),
            },
            log: LogConfig {
                format,
                filter,
                otlp_endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT"),
                otlp_tls,
            },
            sweep_interval: Duration::from_millis(sweep_interval),
            reservation_retention: days(retention_days),
            event_retention: days(event_days),
            idempotency_retention: days(request_days),
            peers,
            tls,
            tls_offloaded,
            health_listen_addr,
        })
    }

    /// From `pairs` alone (tests, tools): every variable not among them
    /// takes its default.
    pub fn from_pairs<V: AsRef<str>>(
        service: Service,
        pairs: &[(&str, V)],
    ) -> Result<Config, ConfigError> {
        Self::from_lookup(service, |k| {
            pairs
                .iter()
                .find(|(p, _)| *p == k)
                .map(|(_, v)| v.as_ref().to_owned())
        })
    }

    /// Where to reach a peer service.
    pub fn peer_url(&self, service: Service) -> &str {
        self.peers
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, u)| u.as_str())
            .unwrap_or_default()
    }
}

fn number<T: std::str::FromStr + PartialOrd + From<u8> + Default>(
    errors: &mut Vec<String>,
    key: &str,
    value: &str,
    min: u8,
) -> T {
    match value.parse::<T>() {
        Ok(v) if v >= T::from(min) => v,
        _ => {
            errors.push(format!(
                "{key}={value:?}: must be a whole number of at least {min}"
            ));
            T::default()
        }
    }
}

/// Whole days as a duration; 0 is none (keep forever).
fn days(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n.saturating_mul(86_400)))
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Every configuration problem found, one per line.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = Config::from_lookup(Service::Routing, lookup(&[])).unwrap();
        assert_eq!(c.listen_addr.port(), 50054);
        assert_eq!(c.database.schema, "routing");
        assert_eq!(c.peer_url(Service::Notifications), "http://127.0.0.1:50058");
        assert_eq!(c.auth.jwt_secret.expose(), DEV_JWT_SECRET);
        assert_eq!(Service::Ingest.default_port(), 50051);
        assert_eq!(
            c.reservation_retention,
            Some(Duration::from_secs(90 * 86_400))
        );
        assert_eq!(c.event_retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(
            c.idempotency_retention,
            Some(Duration::from_secs(30 * 86_400))
        );
    }

    #[test]
    fn reservations_are_kept_whole_days_or_forever() {
        let retention = |days: &str| {
            Config::from_lookup(
                Service::Inventory,
                lookup(&[("OMS_RESERVATION_RETENTION_DAYS", days)]),
            )
            .map(|c| c.reservation_retention)
        };
        assert_eq!(retention("0").unwrap(), None);
        assert_eq!(
            retention("7").unwrap(),
            Some(Duration::from_secs(7 * 86_400))
        );
        for bad in ["-1", "1.5", "a week"] {
            let err = retention(bad).unwrap_err();
            assert!(
                err.to_string().contains("OMS_RESERVATION_RETENTION_DAYS"),
                "{err}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::from_lookup(
            Service::Orders,
            lookup(&[
                ("OMS_LISTEN_ADDR", "nowhere"),
                ("OMS_DATABASE_SCHEMA", "Bad-Schema"),
                ("OMS_CONCURRENCY_LIMIT", "0"),
                ("OMS_AUTH_JWT_SECRET", "short"),
                ("OMS_LOG_FORMAT", "xml"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 5, "{err}");
        assert!(!err.to_string().contains("short"), "secret leaked: {err}");
    }

    #[test]
    fn production_needs_a_secret() {
        let err = Config::from_lookup(
            Service::Orders,
            lookup(&[("OMS_ENVIRONMENT", "production")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("OMS_AUTH_JWT_SECRET"));
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
