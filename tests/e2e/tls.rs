//! The suite over mutual TLS, as production runs it: every service serves
//! a certificate of one CA, calls its peers over `https://` with its own,
//! and refuses connections that show none of the CA's.
use crate::ingest::channel;
use crate::placement::{available, until_state};
use crate::platform::reflected_services;
use crate::shipping::warehouse;
use oms_e2e::{Suite, pos_submission};
use oms_proto::ingest::{self as ing, ingest_service_client::IngestServiceClient};
use oms_proto::orders::{OrderState, order_service_client::OrderServiceClient};
use oms_runtime::{Config, Service};
use oms_testkit::TestDb;
use oms_testkit::authed;
use oms_testkit::pki::{Issued, Pki, path};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const T: &str = "acme";

/// A channel order goes ingest → orders → inventory, routing and
/// fulfillment, and a WMS adapter ships it: each of those calls crosses
/// a mutual TLS connection.
#[tokio::test]
async fn a_channel_order_ships_with_every_call_over_mutual_tls() {
    let suite = Suite::start_over_tls().await;
    assert!(
        suite.services[&Service::Orders]
            .url()
            .starts_with("https://")
    );
    let mut stock = suite.stock(T, &[("A", 5)]).await;
    let _dc1 = warehouse(&suite, "DC1", 0.0);
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(&mut ingest, "pos", ing::ChannelKind::Pos, &[]).await;
    let mut feed = suite.order_events(T).await;
    let submitted = ingest
        .submit_order(authed(
            T,
            pos_submission("tls-1", "till-1", "A", "1 Main St", "Lisbon"),
        ))
        .await
        .unwrap()
        .into_inner();
    let delivered = until_state(&mut feed, &submitted.order, OrderState::Delivered)
        .await
        .order
        .unwrap();
    assert_eq!(delivered.lines[0].quantity_shipped, 1);
    assert_eq!(available(&mut stock, "A").await, 4);
}

/// A channel to `url` from a client that `vars` configure (`OMS_TLS_*`).
fn channel_as(url: &str, vars: &[(&str, String)]) -> tonic::transport::Channel {
    let config = Config::from_pairs(Service::Orders, vars).unwrap();
    oms_runtime::client::channel(url, config.tls.as_ref()).unwrap()
}

/// A client of the orders service as `vars` configure it.
fn orders_client(
    suite: &Suite,
    vars: &[(&str, String)],
    scheme: &str,
) -> OrderServiceClient<tonic::transport::Channel> {
    let url = format!("{scheme}://{}", suite.services[&Service::Orders].addr);
    OrderServiceClient::new(channel_as(&url, vars))
}

/// `issued` as a client's variables, with the CA `ca` to check the server.
fn client_vars(ca: &Pki, issued: &Issued) -> Vec<(&'static str, String)> {
    vec![
        ("OMS_TLS_CA_FILE", path(&ca.ca)),
        ("OMS_TLS_CERT_FILE", path(&issued.cert)),
        ("OMS_TLS_KEY_FILE", path(&issued.key)),
    ]
}

/// A call that needs a token: what a connection refused at its TLS
/// handshake never gets to.
async fn count_orders(
    c: &mut OrderServiceClient<tonic::transport::Channel>,
) -> Result<(), tonic::Status> {
    let req = oms_proto::orders::CountOrdersRequest::default();
    c.count_orders(authed(T, req)).await.map(|_| ())
}

/// A call that connected but carried no token: a certificate does not
/// stand in for one.
fn unauthenticated<T: std::fmt::Debug>(answer: Result<T, tonic::Status>) {
    let status = answer.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
}

#[tokio::test]
async fn callers_without_a_certificate_of_the_ca_cannot_connect() {
    let suite = Suite::start_over_tls().await;
    let pki = suite.pki().unwrap();
    let ca = ("OMS_TLS_CA_FILE", path(&pki.ca));
    // One of the CA's certificates: connects, and still needs its token.
    let ours = pki.issue("platform-team");
    let mut with_cert = orders_client(&suite, &client_vars(pki, &ours), "https");
    count_orders(&mut with_cert).await.unwrap();
    let anonymous = with_cert
        .count_orders(oms_proto::orders::CountOrdersRequest::default())
        .await;
    unauthenticated(anonymous);

    // The server's certificate checks out, but the caller shows none.
    let mut no_cert = orders_client(&suite, std::slice::from_ref(&ca), "https");
    let refused = count_orders(&mut no_cert).await.unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok);

    // A certificate of another CA.
    let other = Pki::new("Another CA");
    let theirs = other.issue("intruder");
    let mut foreign = orders_client(&suite, &client_vars(pki, &theirs), "https");
    let refused = count_orders(&mut foreign).await.unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok);

    // Plaintext to a TLS port.
    let mut plain = orders_client(&suite, &[], "http");
    let refused = count_orders(&mut plain).await.unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok);

    // A client that trusts another CA does not take the server for real.
    let mut fooled = orders_client(&suite, &[("OMS_TLS_CA_FILE", path(&other.ca))], "https");
    let refused = count_orders(&mut fooled).await.unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok);

    // The one that connected is still served: none of the refusals broke
    // the server.
    count_orders(&mut with_cert).await.unwrap();
}

/// With `OMS_TLS_CLIENT_AUTH=optional`, callers outside the cluster (a
/// channel connector, a WMS adapter) connect without a certificate and
/// authenticate with their token alone; a certificate they do show must
/// still be the CA's. `OMS_HEALTH_LISTEN_ADDR` answers health checks in
/// plaintext (the kubelet's probes speak no TLS) and nothing else.
#[tokio::test]
async fn optional_client_certificates_and_a_plaintext_health_port() {
    use oms_proto::routing::{ListRuleSetsRequest, routing_service_client::RoutingServiceClient};
    let pki = Pki::new("OMS test CA");
    let db = TestDb::new().await;
    // A port free a moment ago: the service binds it itself.
    let health_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut vars = pki.service_env("routing");
    vars.push(("OMS_TLS_CLIENT_AUTH", "optional".into()));
    vars.push(("OMS_HEALTH_LISTEN_ADDR", health_addr.to_string()));
    let config = oms_testkit::config_with(Service::Routing, &db, &[], &vars);
    let routing = oms_testkit::spawn(config, oms_routing::run).await;
    let list = async |channel| {
        let req = authed(T, ListRuleSetsRequest::default());
        RoutingServiceClient::new(channel).list_rule_sets(req).await
    };
    let no_cert = channel_as(&routing.url(), &[("OMS_TLS_CA_FILE", path(&pki.ca))]);
    list(no_cert.clone()).await.unwrap();
    let anonymous = RoutingServiceClient::new(no_cert)
        .list_rule_sets(ListRuleSetsRequest::default())
        .await;
    unauthenticated(anonymous);
    let other = Pki::new("Another CA");
    let foreign = channel_as(&routing.url(), &client_vars(&pki, &other.issue("intruder")));
    assert!(list(foreign).await.is_err());

    let plain = channel_as(&format!("http://{health_addr}"), &[]);
    let status = HealthClient::new(plain.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let listed = reflected_services(plain.clone()).await;
    assert_eq!(listed, ["grpc.health.v1.Health"]);
    let elsewhere = list(plain).await.unwrap_err();
    assert_eq!(elsewhere.code(), tonic::Code::Unimplemented, "{elsewhere}");
    // The main port serves no plaintext.
    let plain_main = channel_as(&format!("http://{}", routing.addr), &[]);
    assert!(list(plain_main).await.is_err());
}
