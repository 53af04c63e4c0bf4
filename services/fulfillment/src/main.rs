#[tokio::main]
async fn main() -> anyhow::Result<()> {
    oms_runtime::service_main(oms_runtime::Service::Fulfillment, oms_fulfillment::run).await
}
