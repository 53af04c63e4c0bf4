//! The whole suite in one process: every service on its own ephemeral
//! port, one test database (each service in its own schema), real gRPC
//! between them.
#![allow(clippy::unwrap_used)]

use oms_runtime::Service;
use oms_testkit::{Running, TestDb};
use std::collections::HashMap;
use tokio::net::TcpListener;

pub struct Suite {
    pub services: HashMap<Service, Running>,
    pub db: TestDb,
}

impl Suite {
    pub async fn start() -> Suite {
        let db = TestDb::new().await;
        let mut listeners = Vec::new();
        for s in Service::ALL {
            listeners.push((s, TcpListener::bind("127.0.0.1:0").await.unwrap()));
        }
        let peers: Vec<_> = listeners
            .iter()
            .map(|(s, l)| (*s, l.local_addr().unwrap()))
            .collect();
        let mut services = HashMap::new();
        for (s, listener) in listeners {
            let config = oms_testkit::config(s, &db, &peers);
            let running = match s {
                Service::Ingest => oms_testkit::spawn_on(listener, config, oms_ingest::run).await,
                Service::Orders => oms_testkit::spawn_on(listener, config, oms_orders::run).await,
                Service::Inventory => {
                    oms_testkit::spawn_on(listener, config, oms_inventory::run).await
                }
                Service::Routing => oms_testkit::spawn_on(listener, config, oms_routing::run).await,
                Service::Fulfillment => {
                    oms_testkit::spawn_on(listener, config, oms_fulfillment::run).await
                }
                Service::Returns => oms_testkit::spawn_on(listener, config, oms_returns::run).await,
                Service::Billing => oms_testkit::spawn_on(listener, config, oms_billing::run).await,
                Service::Notifications => {
                    oms_testkit::spawn_on(listener, config, oms_notifications::run).await
                }
            };
            services.insert(s, running);
        }
        Suite { services, db }
    }

    pub fn channel(&self, s: Service) -> tonic::transport::Channel {
        self.services[&s].channel()
    }
}
