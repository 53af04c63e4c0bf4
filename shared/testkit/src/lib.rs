//! Test support shared by every crate's integration tests.
//!
//! Each test gets its own Postgres database ([`TestDb`], dropped at the
//! end), its own Redis key prefix, and runs services in-process on
//! `127.0.0.1:0`, talking real gRPC ([`spawn`]). Set `TEST_LOG=1` to see
//! service logs. `OMS_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `OMS_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`) say where the servers are.
#![allow(clippy::unwrap_used)]

use oms_kernel::Tenant;
use oms_runtime::{Config, Service, auth::TokenIssuer};
use sqlx::{AssertSqlSafe, Connection};
use std::{future::Future, net::SocketAddr, time::Duration};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};

pub mod pki;

fn admin_url() -> String {
    std::env::var("OMS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis tests use (`OMS_TEST_REDIS_URL`, else the local one).
pub fn redis_url() -> String {
    std::env::var("OMS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A database of its own for one test, dropped when the value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        oms_runtime::telemetry::init_for_tests();
        let name = format!("oms_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("Postgres for tests (OMS_TEST_DATABASE_URL) is reachable");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = admin_url();
        let url = match base.rfind('/') {
            Some(i) => format!("{}/{name}", &base[..i]),
            None => panic!("OMS_TEST_DATABASE_URL must end with /<database>"),
        };
        TestDb { name, url }
    }

    /// A pool on `schema` of the test database, set up as a service's own:
    /// the runtime's common tables, then `migrator`'s migrations.
    pub async fn pool(
        &self,
        schema: &str,
        migrator: Option<&sqlx::migrate::Migrator>,
    ) -> sqlx::PgPool {
        let cfg = oms_runtime::config::DbConfig {
            url: self.url.clone(),
            schema: schema.into(),
            max_connections: 2,
        };
        oms_runtime::db::connect_and_migrate(&cfg, migrator, Duration::from_secs(5))
            .await
            .expect("the test database takes the schema")
    }

    /// A connection to the test database, with `schema` as search path.
    pub async fn connect(&self, schema: &str) -> PgConnection {
        let mut c = PgConnection::connect(&self.url).await.unwrap();
        sqlx::query(AssertSqlSafe(format!("SET search_path TO {schema}")))
            .execute(&mut c)
            .await
            .unwrap();
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var("KEEP_TEST_DB").is_ok() {
            eprintln!("kept test database {}", self.name);
            return;
        }
        let name = self.name.clone();
        // Drop runs outside async context; a short-lived runtime on its own
        // thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut admin = PgConnection::connect(&admin_url()).await?;
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
    }
}

pub use sqlx::PgConnection;

/// Runs a query returning one text column (for assertions on catalogs).
pub async fn query_strings(db: &mut PgConnection, sql: &'static str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(db).await.unwrap()
}

/// A Redis key prefix of its own for one test.
pub fn redis_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// The configuration a service gets in tests: the test database, a fresh
/// Redis prefix, an ephemeral port, the development secret, and peers at
/// `peers` (services already spawned).
pub fn config(service: Service, db: &TestDb, peers: &[(Service, SocketAddr)]) -> Config {
    config_with(service, db, peers, &[])
}

/// [`config`] with some variables set otherwise (`("OMS_REDIS_URL", ...)`).
pub fn config_with(
    service: Service,
    db: &TestDb,
    peers: &[(Service, SocketAddr)],
    overrides: &[(&str, String)],
) -> Config {
    let prefix = redis_prefix();
    let redis = redis_url();
    // Peers serve TLS when the test gives this one a CA to check them by.
    let scheme = if overrides.iter().any(|(k, _)| *k == "OMS_TLS_CA_FILE") {
        "https"
    } else {
        "http"
    };
    Config::from_lookup(service, |key| {
        if let Some((_, v)) = overrides.iter().find(|(k, _)| *k == key) {
            return Some(v.clone());
        }
        match key {
            "OMS_DATABASE_URL" => Some(db.url.clone()),
            "OMS_LISTEN_ADDR" => Some("127.0.0.1:0".into()),
            "OMS_REDIS_URL" => Some(redis.clone()),
            "OMS_REDIS_KEY_PREFIX" => Some(prefix.clone()),
            "OMS_DATABASE_MAX_CONNECTIONS" => Some("5".into()),
            "OMS_SHUTDOWN_GRACE_MS" => Some("5000".into()),
            "OMS_SWEEP_INTERVAL_MS" => Some("50".into()),
            // Peers the test did not start are unreachable (never a suite
            // running locally on the default ports).
            k if k.starts_with("OMS_") && k.ends_with("_URL") => Some(
                peers
                    .iter()
                    .find(|(s, _)| format!("OMS_{}_URL", s.name().to_uppercase()) == k)
                    .map(|(_, a)| format!("{scheme}://{a}"))
                    .unwrap_or_else(|| "http://127.0.0.1:9".into()),
            ),
            _ => None,
        }
    })
    .expect("test configuration is valid")
}

/// A service running in-process.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
    /// The service's own runtime, when started with [`spawn_isolated`].
    runtime: Option<tokio::runtime::Runtime>,
    /// The service's TLS, when it serves TLS: the tests' channels call it
    /// as its peers do, with its own certificate.
    pub tls: Option<oms_runtime::tls::TlsConfig>,
}

impl Running {
    /// Where the service is: `https://` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A channel to the service.
    pub fn channel(&self) -> Channel {
        oms_runtime::client::channel(&self.url(), self.tls.as_ref()).unwrap()
    }

    /// Stops the service (as SIGTERM would) and waits until it has drained.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        (&mut self.handle).await?
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Running {
    /// Kills the service as a crash would: every task of its runtime stops
    /// where it is, connections drop, nothing drains. Returns once its
    /// sockets are closed.
    pub async fn crash(mut self) {
        if let Some(rt) = self.runtime.take() {
            tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(10)))
                .await
                .unwrap();
        }
    }
}

/// Starts a service on a runtime of its own (so [`Running::crash`] can kill
/// all its tasks at once) and returns once it is healthy.
pub async fn spawn_isolated<F, Fut>(listener: TcpListener, config: Config, run: F) -> Running
where
    F: FnOnce(Config, TcpListener, CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let std_listener = listener.into_std().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        // Named for the service, so that a profile tells them apart.
        .thread_name(format!("oms-{}", config.service.name()))
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let tls = serves_tls(&config);
    let handle = rt.spawn(async move {
        let listener = TcpListener::from_std(std_listener)?;
        run(config, listener, token).await
    });
    let running = Running {
        addr,
        shutdown,
        handle,
        runtime: Some(rt),
        tls,
    };
    wait_serving(&running).await;
    running
}

/// Starts a service's `run` on `127.0.0.1:0` and returns once its health
/// check answers SERVING.
pub async fn spawn<F, Fut>(config: Config, run: F) -> Running
where
    F: FnOnce(Config, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_on(listener, config, run).await
}

/// Like [`spawn`] on a listener bound beforehand (so peers can be told
/// each other's addresses before any starts).
pub async fn spawn_on<F, Fut>(listener: TcpListener, config: Config, run: F) -> Running
where
    F: FnOnce(Config, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let tls = serves_tls(&config);
    let handle = tokio::spawn(run(config, listener, shutdown.clone()));
    let running = Running {
        addr,
        shutdown,
        handle,
        runtime: None,
        tls,
    };
    wait_serving(&running).await;
    running
}

/// The service's TLS when it serves TLS.
fn serves_tls(config: &Config) -> Option<oms_runtime::tls::TlsConfig> {
    config.tls.clone().filter(|t| t.serves_tls())
}

async fn wait_serving(r: &Running) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut client = HealthClient::new(r.channel());
    loop {
        assert!(
            !r.handle.is_finished(),
            "service at {} exited during start",
            r.addr
        );
        let status = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|s| s.into_inner().status);
        if status.ok() == Some(ServingStatus::Serving as i32) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "service at {} never became healthy",
            r.addr
        );
        // Polling a readiness condition, not timing a result.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A bearer token for `tenant` signed with the development secret.
pub fn token(tenant: &str) -> String {
    let cfg = Config::from_lookup(Service::Orders, |_| None).unwrap();
    TokenIssuer::new(&cfg.auth).mint(
        &Tenant::parse(tenant).unwrap(),
        "test",
        Duration::from_secs(600),
    )
}

/// `msg` as a request carrying `tenant`'s token.
pub fn authed<T>(tenant: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token(tenant)).parse().unwrap(),
    );
    req
}

/// Adds trigger `name` to `db` (its schema): a row written (`on`: "INSERT
/// ON order_history", "UPDATE ON reservations"...) for which `when` holds
/// runs `body` (PL/pgSQL) first: a fault injected into a service's
/// transaction.
pub async fn trigger(db: &mut PgConnection, name: &str, on: &str, when: &str, body: &str) {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF {when} THEN {body} END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER {name} BEFORE {on} FOR EACH ROW EXECUTE FUNCTION {name}();"
    )))
    .execute(db)
    .await
    .unwrap();
}

/// Sends until the answer is neither `UNAVAILABLE` nor a broken
/// connection (what a caller does while a service restarts or rebuilds
/// its gate: every mutating call is idempotent by its request id), at
/// most 100 times, 20 ms apart.
pub async fn retried<C: Clone, T>(
    c: &C,
    send: impl AsyncFn(&mut C) -> Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, tonic::Status> {
    let mut c = c.clone();
    for _ in 0..100 {
        match send(&mut c).await {
            Err(e) if transient(&e) => tokio::time::sleep(Duration::from_millis(20)).await,
            r => return r.map(tonic::Response::into_inner),
        }
    }
    panic!("unavailable 100 times in a row");
}

/// `UNAVAILABLE`, or a call whose connection broke: the server went away
/// mid-call, and the client's transport made the status (`UNKNOWN` or
/// `CANCELLED`, with the transport's error as its source; a status the
/// server sent has none).
fn transient(e: &tonic::Status) -> bool {
    use std::error::Error as _;
    e.code() == tonic::Code::Unavailable || e.source().is_some()
}

pub mod adapter;
pub mod otlp;
mod redis_servers;
pub use redis_servers::{RedisCluster, RedisServer};
