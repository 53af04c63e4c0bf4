//! Integration health as OpenTelemetry metrics, for this process's adapter
//! streams: how many are open per tenant, how far each lags (commands sent
//! and not acknowledged) and how long since each was last heard from; and
//! adapter events answered, by outcome. `ListAdapterSessions` gives the
//! same per adapter across replicas, as of each adapter's last heartbeat.
use crate::bridge::Progress;
use oms_proto::fulfillment::EventAck;
use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, ObservableGauge},
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak, atomic::Ordering};
use uuid::Uuid;

struct Stream {
    tenant: String,
    adapter: String,
    progress: Arc<Progress>,
}

type Open = Mutex<HashMap<Uuid, Stream>>;

pub struct Health {
    open: Arc<Open>,
    events: Counter<u64>,
    /// Kept so their callbacks stay registered as long as the service.
    _gauges: (
        ObservableGauge<u64>,
        ObservableGauge<i64>,
        ObservableGauge<f64>,
    ),
}

/// Calls `f` with every open stream, if the service is still there.
fn each(open: &Weak<Open>, mut f: impl FnMut(&Stream)) {
    if let Some(open) = open.upgrade() {
        for s in open.lock().unwrap_or_else(|e| e.into_inner()).values() {
            f(s);
        }
    }
}

fn who(s: &Stream) -> [KeyValue; 2] {
    [
        KeyValue::new("tenant", s.tenant.clone()),
        KeyValue::new("adapter", s.adapter.clone()),
    ]
}

impl Health {
    pub fn new() -> Self {
        let meter = global::meter("oms-fulfillment");
        let open: Arc<Open> = Arc::default();
        let w = Arc::downgrade(&open);
        let streams = meter
            .u64_observable_gauge("oms.fulfillment.adapter.streams")
            .with_description("WMS adapter streams open, per tenant")
            .with_callback(move |o| {
                let mut per: BTreeMap<String, u64> = BTreeMap::new();
                each(&w, |s| *per.entry(s.tenant.clone()).or_default() += 1);
                for (tenant, n) in per {
                    o.observe(n, &[KeyValue::new("tenant", tenant)]);
                }
            })
            .build();
        let w = Arc::downgrade(&open);
        let lag = meter
            .i64_observable_gauge("oms.fulfillment.adapter.unacknowledged_commands")
            .with_description("Commands sent to an adapter and not acknowledged yet")
            .with_callback(move |o| {
                each(&w, |s| {
                    let p = &s.progress;
                    let lag = p.sent.load(Ordering::Acquire) - p.acked.load(Ordering::Acquire);
                    o.observe(lag.max(0), &who(s));
                })
            })
            .build();
        let w = Arc::downgrade(&open);
        let silence = meter
            .f64_observable_gauge("oms.fulfillment.adapter.silence")
            .with_unit("s")
            .with_description("Time since an adapter was last heard from")
            .with_callback(move |o| {
                each(&w, |s| {
                    o.observe(s.progress.since_heard().as_secs_f64(), &who(s))
                })
            })
            .build();
        let events = meter
            .u64_counter("oms.fulfillment.adapter.events")
            .with_description("Adapter status events and receipts answered, by outcome")
            .build();
        Health {
            open,
            events,
            _gauges: (streams, lag, silence),
        }
    }

    pub fn opened(&self, session: Uuid, tenant: &str, adapter: &str, progress: Arc<Progress>) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(
            session,
            Stream {
                tenant: tenant.to_owned(),
                adapter: adapter.to_owned(),
                progress,
            },
        );
    }

    pub fn closed(&self, session: Uuid) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session);
    }

    /// Counts answers to adapter events.
    pub fn answered<'a>(&self, tenant: &str, acks: impl Iterator<Item = &'a EventAck>) {
        let (mut accepted, mut refused) = (0u64, 0u64);
        for a in acks {
            if a.accepted {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        for (n, outcome) in [(accepted, "accepted"), (refused, "refused")] {
            if n > 0 {
                self.events.add(
                    n,
                    &[
                        KeyValue::new("tenant", tenant.to_owned()),
                        KeyValue::new("outcome", outcome),
                    ],
                );
            }
        }
    }
}
