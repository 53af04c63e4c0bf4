//! The load loop every scenario shares: N clients calling as fast as they
//! can for a fixed time, with latencies in one histogram.
use hdrhistogram::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How one call ended.
pub enum Outcome {
    Ok,
    /// Refused by the service on purpose (e.g. out of stock).
    Refused,
    Failed,
}

pub struct Report {
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub refused: u64,
    pub failed: u64,
    pub seconds: f64,
    /// Busy CPU time of the whole machine during the run.
    pub cpu_seconds: Option<f64>,
    /// The share of the machine's CPU time the host gave other guests
    /// during the run (steal).
    pub steal_share: Option<f64>,
}

impl Report {
    /// A latency quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// Busy CPU microseconds of the whole machine per answered call.
    pub fn cpu_us_per_call(&self) -> Option<f64> {
        let calls = self.ok + self.refused;
        self.cpu_seconds
            .filter(|_| calls > 0)
            .map(|s| s * 1e6 / calls as f64)
    }
}

/// Runs `clients` loops for `seconds`; `client(i)` makes client `i`'s call
/// function, which gets the call's sequence number.
pub async fn drive<F, C, Fut>(clients: usize, seconds: u64, mut client: F) -> Report
where
    F: FnMut(usize) -> C,
    C: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let cpu_before = cpu_times();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let mut call = client(i);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3).expect("valid histogram bounds");
                let (mut ok, mut refused, mut failed) = (0u64, 0u64, 0u64);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let t = Instant::now();
                    let outcome = call(n).await;
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                    match outcome {
                        Outcome::Ok => ok += 1,
                        Outcome::Refused => refused += 1,
                        Outcome::Failed => failed += 1,
                    }
                }
                (hist, ok, refused, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut report = Report {
        hist: Histogram::new(3).expect("valid histogram bounds"),
        ok: 0,
        refused: 0,
        failed: 0,
        seconds: 0.0,
        cpu_seconds: None,
        steal_share: None,
    };
    for t in tasks {
        if let Ok((h, ok, refused, failed)) = t.await {
            let _ = report.hist.add(h);
            report.ok += ok;
            report.refused += refused;
            report.failed += failed;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    if let (Some(before), Some(after)) = (cpu_before, cpu_times()) {
        report.cpu_seconds = Some(after.busy - before.busy);
        let all = after.all - before.all;
        report.steal_share = (all > 0.0).then(|| (after.steal - before.steal) / all);
    }
    report
}

/// CPU time of the whole machine so far (every process, the services,
/// Postgres, Redis and the clients alike), from /proc/stat, in seconds.
#[derive(Clone, Copy)]
struct CpuTimes {
    /// Busy: per operation, what an operation costs in all. A busier
    /// shared host still raises it (the same code measured 141 and 206 µs
    /// per reservation half an hour apart), so compare it only between
    /// runs close in time.
    busy: f64,
    /// Taken by the hypervisor for other guests: how contended the host
    /// was, which moves every figure of a run.
    steal: f64,
    all: f64,
}

/// None off Linux.
fn cpu_times() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in
    // user); /proc/stat counts in USER_HZ, 100 per second on Linux.
    let sum = |at: &[usize]| at.iter().filter_map(|i| ticks.get(*i)).sum::<f64>() / 100.0;
    Some(CpuTimes {
        busy: sum(&[0, 1, 2, 5, 6]),
        steal: sum(&[7]),
        all: sum(&[0, 1, 2, 3, 4, 5, 6, 7]),
    })
}

/// Brings the planner's statistics up to date for every schema of `db`.
/// A scenario that starts on empty tables first runs a short warm-up and
/// then this, so that it measures the steady state: before the first
/// ANALYZE (autovacuum's, about a minute into a real deployment) Postgres
/// has no statistics and may cache a plan that scans a whole tenant's rows
/// for a primary-key lookup.
pub async fn analyze(db: &oms_testkit::TestDb) -> anyhow::Result<()> {
    let mut conn = db.connect("public").await;
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    Ok(())
}

/// `msg` with the bearer `token` (already `Bearer ...`).
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = token.parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// A runtime of its own for the services under test (their own threads,
/// as in their own processes), shut down without waiting when dropped,
/// also when a scenario returns early with an error inside the load
/// generator's runtime (dropping it there the usual way would panic).
pub struct ServerRuntime(Option<tokio::runtime::Runtime>);

impl ServerRuntime {
    pub fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .map(|rt| ServerRuntime(Some(rt)))
    }
}

impl std::ops::Deref for ServerRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
