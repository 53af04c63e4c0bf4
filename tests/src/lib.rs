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
    peers: Vec<(Service, std::net::SocketAddr)>,
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
            services.insert(s, start_one(s, listener, &db, &peers).await);
        }
        Suite {
            services,
            db,
            peers,
        }
    }

    pub fn channel(&self, s: Service) -> tonic::transport::Channel {
        self.services[&s].channel()
    }

    /// Kills a service as a crash would (nothing drains); its port stays
    /// known so [`Suite::start_again`] brings it back there.
    pub async fn crash(&mut self, s: Service) {
        let old = self.services.remove(&s).unwrap();
        old.crash().await;
    }

    /// Starts a crashed service again on its port and database.
    pub async fn start_again(&mut self, s: Service) {
        let addr = self.peers.iter().find(|(p, _)| *p == s).unwrap().1;
        let listener = TcpListener::bind(addr)
            .await
            .expect("the crashed service's port is free");
        let running = start_one(s, listener, &self.db, &self.peers).await;
        self.services.insert(s, running);
    }
}

async fn start_one(
    s: Service,
    listener: TcpListener,
    db: &TestDb,
    peers: &[(Service, std::net::SocketAddr)],
) -> Running {
    let config = oms_testkit::config(s, db, peers);
    match s {
        Service::Ingest => oms_testkit::spawn_isolated(listener, config, oms_ingest::run).await,
        Service::Orders => oms_testkit::spawn_isolated(listener, config, oms_orders::run).await,
        Service::Inventory => {
            oms_testkit::spawn_isolated(listener, config, oms_inventory::run).await
        }
        Service::Routing => oms_testkit::spawn_isolated(listener, config, oms_routing::run).await,
        Service::Fulfillment => {
            oms_testkit::spawn_isolated(listener, config, oms_fulfillment::run).await
        }
        Service::Returns => oms_testkit::spawn_isolated(listener, config, oms_returns::run).await,
        Service::Billing => oms_testkit::spawn_isolated(listener, config, oms_billing::run).await,
        Service::Notifications => {
            oms_testkit::spawn_isolated(listener, config, oms_notifications::run).await
        }
    }
}
