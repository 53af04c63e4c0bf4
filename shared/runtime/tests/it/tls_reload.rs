//! Renewed TLS files are used without a restart: a certificate rewritten
//! in place is served to new connections, a CA file that gains a CA lets
//! its callers in, a caller's renewed CA is trusted; files that cannot be
//! used change nothing.
use oms_runtime::server::GrpcServer;
use oms_runtime::{Config, Service};
use oms_testkit::pki::{Pki, path};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn config(service: Service, cert: &std::path::Path, key: &std::path::Path, ca: &str) -> Config {
    let vars = [
        ("OMS_TLS_CERT_FILE", path(cert)),
        ("OMS_TLS_KEY_FILE", path(key)),
        ("OMS_TLS_CA_FILE", ca.to_owned()),
        ("OMS_TLS_RELOAD_INTERVAL_S", "1".to_owned()),
    ];
    Config::from_pairs(service, &vars).unwrap()
}

/// When the certificate a new connection to `addr` is served expires
/// (Unix seconds); None when the handshake fails.
async fn served_until(addr: SocketAddr, caller: &Config) -> Option<i64> {
    let client = caller.tls.as_ref()?.peer_client()?;
    let uri = format!("http://{addr}").parse().unwrap();
    let io = oms_runtime::tls_live::connect(uri, client).await.ok()?;
    let (_, session) = io.inner().get_ref();
    let der = session.peer_certificates()?.first()?.clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Whether a health check from `caller` over a new channel is answered.
async fn answered(addr: SocketAddr, caller: &Config) -> bool {
    let url = format!("https://127.0.0.1:{}", addr.port());
    let channel = oms_runtime::client::channel(&url, caller.tls.as_ref()).unwrap();
    let mut health = HealthClient::new(channel);
    health.check(HealthCheckRequest::default()).await.is_ok()
}

/// Polls `cond` until it holds; fails after 10 s.
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_of(year: i32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(year, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
}

#[tokio::test]
async fn renewed_certificates_and_cas_are_used_without_a_restart() {
    let pki = Pki::new("first CA");
    let served = pki.issue_until("routing", Some((2031, 1, 1)));
    // The server's CA file, rewritten below; callers read the CA's own.
    let server_ca = pki.ca.with_file_name("server-ca.crt");
    std::fs::copy(&pki.ca, &server_ca).unwrap();
    let server = config(
        Service::Routing,
        &served.cert,
        &served.key,
        &path(&server_ca),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(GrpcServer::new(&server).serve(listener, shutdown.clone()));
    let own = pki.issue("orders");
    let caller = config(Service::Orders, &own.cert, &own.key, &path(&pki.ca));
    until("the server answers", async || answered(addr, &caller).await).await;
    let url = format!("https://127.0.0.1:{}", addr.port());
    let open = oms_runtime::client::channel(&url, caller.tls.as_ref()).unwrap();
    let mut open = HealthClient::new(open);
    open.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(served_until(addr, &caller).await, Some(start_of(2031)));

    // Renewed in place: new connections get the new certificate; the open
    // one goes on.
    pki.issue_until("routing", Some((2032, 1, 1)));
    until("the renewed certificate is served", async || {
        served_until(addr, &caller).await == Some(start_of(2032))
    })
    .await;
    open.check(HealthCheckRequest::default()).await.unwrap();

    // A caller of another CA is refused until the server's CA file holds
    // that CA too.
    let second = Pki::new("second CA");
    let theirs = second.issue("wms");
    let stranger = config(Service::Orders, &theirs.cert, &theirs.key, &path(&pki.ca));
    assert!(
        !answered(addr, &stranger).await,
        "another CA's caller got in"
    );
    let both = [
        std::fs::read(&pki.ca).unwrap(),
        std::fs::read(&second.ca).unwrap(),
    ]
    .concat();
    std::fs::write(&server_ca, both).unwrap();
    until("the second CA's caller is let in", async || {
        answered(addr, &stranger).await
    })
    .await;

    // A caller whose CA file is renewed trusts the new CA from its next
    // connection (reloaded here by hand: a service's own watch does it).
    let trusting = second.ca.with_file_name("trusted.crt");
    std::fs::copy(&second.ca, &trusting).unwrap();
    let wary = config(Service::Orders, &own.cert, &own.key, &path(&trusting));
    assert!(!answered(addr, &wary).await, "a server of an untrusted CA");
    std::fs::copy(&pki.ca, &trusting).unwrap();
    assert_eq!(wary.tls.as_ref().unwrap().reload(), Ok(true));
    assert!(answered(addr, &wary).await);

    // Files that cannot be used change nothing: a certificate whose key
    // is another's is refused, and the one in use stays.
    let other = pki.issue("other");
    std::fs::copy(&other.cert, &served.cert).unwrap();
    let refused = server.tls.as_ref().unwrap().reload().unwrap_err();
    assert!(refused.contains("cannot serve TLS"), "{refused}");
    assert_eq!(served_until(addr, &caller).await, Some(start_of(2032)));
    let expiry = server.tls.as_ref().unwrap().expires_in().unwrap();
    assert!(expiry > (start_of(2032) - chrono::Utc::now().timestamp() - 60) as f64);

    shutdown.cancel();
    drop(open);
    running.await.unwrap().unwrap();
}
