#[tokio::main]
async fn main() -> anyhow::Result<()> {
    oms_runtime::service_main(oms_runtime::Service::Ingest, oms_ingest::run).await
}
