//! The plaintext health port (`OMS_HEALTH_LISTEN_ADDR`) follows the main
//! port through a drain: the kubelet must read NOT_SERVING there while
//! calls finish, not a refused connection.
use oms_runtime::{Config, Service, server::GrpcServer};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The health port's answer, or `None` while it cannot be reached.
async fn status(addr: std::net::SocketAddr) -> Option<i32> {
    let channel = oms_runtime::client::channel(&format!("http://{addr}"), None).ok()?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .ok()?;
    Some(answer.into_inner().status)
}

/// Polls the health port until it answers `want`; panics after 10 s.
async fn until_status(addr: std::net::SocketAddr, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(addr).await != Some(want as i32) {
        assert!(Instant::now() < deadline, "health port never said {want:?}");
        // Polling a condition, not timing a result.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_health_port_says_not_serving_while_the_main_port_drains() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let health_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let vars = [
        ("OMS_HEALTH_LISTEN_ADDR", health_addr.to_string()),
        ("OMS_SHUTDOWN_GRACE_MS", "20000".to_string()),
    ];
    let config = Config::from_pairs(Service::Routing, &vars).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let main_addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(GrpcServer::new(&config).serve(listener, shutdown.clone()));
    until_status(health_addr, ServingStatus::Serving).await;

    // A call that lasts: a reflection stream whose caller has not finished
    // sending. The drain waits for it.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let channel = oms_runtime::client::channel(&format!("http://{main_addr}"), None).unwrap();
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    tx.send(list).await.unwrap();
    let mut open = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    open.message().await.unwrap().expect("the listing");

    shutdown.cancel();
    until_status(health_addr, ServingStatus::NotServing).await;
    assert!(!server.is_finished(), "the drain waits for the open call");

    // The call ends; the server stops, and its health port with it.
    drop(tx);
    while open.message().await.ok().flatten().is_some() {}
    server.await.unwrap().unwrap();
    assert_eq!(status(health_addr).await, None, "the health port is closed");
}
