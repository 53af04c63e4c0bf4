#[tokio::main]
async fn main() -> anyhow::Result<()> {
    oms_runtime::service_main(oms_runtime::Service::Routing, oms_routing::run).await
}
