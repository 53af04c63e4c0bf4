//! Background work done at an interval until shutdown.
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs `work` every `interval` in a task of its own (the first at once;
/// one that overruns delays the next instead of bunching them up) until
/// `shutdown`; a run under way is finished first.
pub fn every<F, Fut>(interval: Duration, shutdown: CancellationToken, mut work: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            work().await;
        }
    });
}
