//! Which replica follows which tenant's feed. Each replica holds a session
//! advisory lock per tenant it follows, all on one connection of its own:
//! Postgres frees them when that replica stops or its connection breaks,
//! and another replica takes them on its next round. So one replica reads
//! each tenant's feed instead of every replica reading every feed (each
//! event is still claimed under the cursor's lock, so a lease that changes
//! hands mid-event applies nothing twice).
use sqlx::{ConnectOptions, PgConnection, PgPool};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How long a lease query may take before its connection counts as lost
/// (one cut off without a word would hang the rounds).
const TIMEOUT: Duration = Duration::from_secs(10);
/// A follower that ends this soon after it started counts a strike; this
/// many in a row and the replica gives the tenant's lease up for this many
/// rounds (it cannot reach the feed, say: another replica may).
const QUICK_FAILURE: Duration = Duration::from_secs(30);
const STRIKES: u32 = 3;
const BENCHED_ROUNDS: u32 = 5;

pub struct Leases {
    pool: PgPool,
    /// The feed's name, part of each lock's key.
    source: &'static str,
    /// The connection the locks live on; `None` until first needed and
    /// after it was lost.
    conn: Option<PgConnection>,
    /// Tenants whose lock this replica holds.
    held: HashSet<String>,
    /// Followers that ended soon after they started, in a row, by tenant.
    strikes: HashMap<String, u32>,
    /// Rounds left before a tenant given up is taken again.
    benched: HashMap<String, u32>,
}

impl Leases {
    pub fn new(pool: PgPool, source: &'static str) -> Self {
        Leases {
            pool,
            source,
            conn: None,
            held: HashSet::new(),
            strikes: HashMap::new(),
            benched: HashMap::new(),
        }
    }

    /// Starts a round: a tenant given up waits one round less. Whether
    /// the leases taken so far still hold: false (and none held any more)
    /// when their connection was lost.
    pub async fn next_round(&mut self) -> bool {
        self.benched.retain(|_, n| {
            *n -= 1;
            *n > 0
        });
        let Some(conn) = self.conn.as_mut() else {
            return true;
        };
        let ping = tokio::time::timeout(TIMEOUT, sqlx::query("SELECT 1").execute(conn)).await;
        if matches!(ping, Ok(Ok(_))) {
            return true;
        }
        self.lost();
        false
    }

    /// Of `tenants` (none followed here yet), those this replica follows
    /// now: whose lease it holds or takes (one query for all), leaving out
    /// those it gave up lately. When the leases' connection cannot be had,
    /// all of them: every replica then follows every tenant, as each
    /// event is claimed once anyway (slower, never stalled).
    pub async fn take(&mut self, tenants: Vec<String>) -> Vec<String> {
        let tenants: Vec<String> = tenants
            .into_iter()
            .filter(|t| !self.benched.contains_key(t))
            .collect();
        let wanted: Vec<String> = tenants
            .iter()
            .filter(|t| !self.held.contains(*t))
            .cloned()
            .collect();
        if !wanted.is_empty() {
            match tokio::time::timeout(TIMEOUT, self.try_locks(&wanted)).await {
                Ok(Ok(got)) => self.held.extend(got),
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(%error, "could not take feed leases: following the feeds without them");
                    // Whatever it holds goes with the connection.
                    self.lost();
                    return tenants;
                }
            }
        }
        tenants
            .into_iter()
            .filter(|t| self.held.contains(t))
            .collect()
    }

    /// `tenant`'s follower ended after running for `ran`: after a few
    /// quick ends in a row the lease goes, for another replica to take.
    pub async fn ended(&mut self, tenant: &str, ran: Duration) {
        let n = self.strikes.entry(tenant.to_owned()).or_default();
        *n = if ran < QUICK_FAILURE { *n + 1 } else { 0 };
        if *n < STRIKES {
            return;
        }
        self.strikes.remove(tenant);
        self.benched.insert(tenant.to_owned(), BENCHED_ROUNDS);
        if !self.held.remove(tenant) {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let unlock = sqlx::query(
            "SELECT pg_advisory_unlock(hashtextextended('follow:' || $2 || ':' || $1, 0))",
        )
        .bind(tenant)
        .bind(self.source)
        .execute(conn);
        // Not given up: the next round finds out whether the connection
        // still holds it.
        if !matches!(tokio::time::timeout(TIMEOUT, unlock).await, Ok(Ok(_))) {
            tracing::warn!(tenant, "could not give up a feed lease");
        }
    }

    async fn try_locks(&mut self, tenants: &[String]) -> sqlx::Result<Vec<String>> {
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => self
                .conn
                .insert(self.pool.connect_options().connect().await?),
        };
        sqlx::query_scalar(
            "SELECT t FROM unnest($1::text[]) AS t
             WHERE pg_try_advisory_lock(hashtextextended('follow:' || $2 || ':' || t, 0))",
        )
        .bind(tenants)
        .bind(self.source)
        .fetch_all(conn)
        .await
    }

    /// Drops the connection, and with it every lease.
    fn lost(&mut self) {
        self.conn = None;
        self.held.clear();
    }
}
