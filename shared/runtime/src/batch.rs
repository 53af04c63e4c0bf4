//! Batching (group commit): callers hand a job to a few worker tasks, each
//! of which takes every job waiting (up to a limit) and serves them with one
//! Postgres transaction or query. Under load one round trip and one commit
//! carry many jobs, so throughput is not bound by commit latency and round
//! trips; alone, a job is served at once (no timer waits for company).
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

type Job<J, R> = (J, oneshot::Sender<R>);

/// The entry point of a batcher of `J`s answered with `R`s.
pub struct Batcher<J, R> {
    jobs: mpsc::Sender<Job<J, R>>,
}

impl<J, R> Clone for Batcher<J, R> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

/// The batcher stopped (the service is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the service is shutting down")]
pub struct Stopped;

impl Stopped {
    /// `UNAVAILABLE` (`SHUTTING_DOWN`) of `domain`: the caller retries,
    /// another replica answers.
    pub fn into_status(self, domain: &str) -> tonic::Status {
        crate::status::with_reason(
            tonic::Code::Unavailable,
            domain,
            "SHUTTING_DOWN",
            "the service is shutting down; retry",
        )
    }
}

impl<J: Send + 'static, R: Send + 'static> Batcher<J, R> {
    /// Starts `workers` tasks that each serve up to `max_batch` jobs at a
    /// time with `serve`, which answers every job, in the order given.
    /// Several workers keep Postgres busy while one waits for its commit.
    pub fn start<F, Fut>(
        workers: usize,
        max_batch: usize,
        shutdown: CancellationToken,
        serve: F,
    ) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (jobs, rx) = mpsc::channel::<Job<J, R>>(max_batch * workers * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers.max(1) {
            let (rx, shutdown, serve) = (rx.clone(), shutdown.clone(), serve.clone());
            tokio::spawn(async move {
                loop {
                    let (batch, answer_to): (Vec<J>, Vec<oneshot::Sender<R>>) = {
                        let mut rx = rx.lock().await;
                        let first = tokio::select! {
                            j = rx.recv() => j,
                            _ = shutdown.cancelled() => None,
                        };
                        let Some(first) = first else { return };
                        let mut batch = vec![first];
                        while batch.len() < max_batch {
                            match rx.try_recv() {
                                Ok(j) => batch.push(j),
                                Err(_) => break,
                            }
                        }
                        batch.into_iter().unzip()
                    };
                    let answers = serve(batch).await;
                    debug_assert_eq!(answers.len(), answer_to.len(), "one answer per job");
                    for (a, to) in answers.into_iter().zip(answer_to) {
                        // The caller may have gone (its request was cancelled).
                        let _ = to.send(a);
                    }
                }
            });
        }
        Self { jobs }
    }

    /// Serves `job` with whatever else is waiting and returns its answer.
    pub async fn submit(&self, job: J) -> Result<R, Stopped> {
        let (to, answer) = oneshot::channel();
        self.jobs.send((job, to)).await.map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

/// Serves `jobs` with one call of `serve` (one answer per job, in order, as
/// for [`Batcher::start`]); if that fails as a whole (a deadlock, a lost
/// connection, one row a constraint refuses), serves each job alone, so
/// that no job fails because of a neighbour.
pub async fn together_or_alone<'a, J, R, E, F, Fut>(jobs: &'a [J], serve: F) -> Vec<Result<R, E>>
where
    E: std::fmt::Display,
    F: Fn(&'a [J]) -> Fut,
    Fut: Future<Output = Result<Vec<Result<R, E>>, E>>,
{
    match serve(jobs).await {
        Ok(answers) => answers,
        Err(e) if jobs.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "batch failed; serving each job alone");
            let mut answers = Vec::with_capacity(jobs.len());
            for j in jobs {
                match serve(std::slice::from_ref(j)).await {
                    Ok(one) => answers.extend(one),
                    Err(e) => answers.push(Err(e)),
                }
            }
            debug_assert_eq!(answers.len(), jobs.len(), "one answer per job");
            answers
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn every_job_gets_its_own_answer_and_waiting_jobs_share_a_write() {
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = writes.clone();
        let shutdown = CancellationToken::new();
        // One worker blocked on a gate: jobs pile up behind the first write.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let gc = Batcher::start(1, 64, shutdown.clone(), move |jobs: Vec<u32>| {
            let (counted, g) = (counted.clone(), g.clone());
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                g.acquire().await.expect("open").forget();
                jobs.into_iter().map(|j| j * 10).collect::<Vec<_>>()
            }
        });
        let calls: Vec<_> = (0..50u32)
            .map(|i| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.submit(i).await.expect("answered") })
            })
            .collect();
        gate.add_permits(1000);
        for (i, c) in calls.into_iter().enumerate() {
            assert_eq!(c.await.expect("joined"), i as u32 * 10);
        }
        let n = writes.load(Ordering::SeqCst);
        assert!(n < 50, "50 jobs took {n} writes");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_failed_batch_is_served_again_job_by_job() {
        // The batch fails because of job 3; alone, only job 3 does.
        let serve = |jobs: &[u32]| {
            let jobs = jobs.to_vec();
            async move {
                if jobs.len() > 1 && jobs.contains(&3) {
                    return Err("batch refused".to_string());
                }
                Ok(jobs
                    .into_iter()
                    .map(|j| {
                        if j == 3 {
                            Err(format!("{j} refused"))
                        } else {
                            Ok(j)
                        }
                    })
                    .collect())
            }
        };
        let answers = together_or_alone(&[1, 2, 3, 4], serve).await;
        assert_eq!(answers, vec![Ok(1), Ok(2), Err("3 refused".into()), Ok(4)]);
        assert_eq!(together_or_alone(&[1, 2], serve).await, vec![Ok(1), Ok(2)]);
    }

    #[tokio::test]
    async fn a_stopped_writer_refuses_jobs() {
        let shutdown = CancellationToken::new();
        let gc = Batcher::start(2, 8, shutdown.clone(), |jobs: Vec<u32>| async move { jobs });
        assert_eq!(gc.submit(7).await.expect("answered"), 7);
        shutdown.cancel();
        // The workers end; their receiver with them.
        let mut refused = false;
        for _ in 0..1000 {
            if gc.submit(1).await.is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused);
    }
}
