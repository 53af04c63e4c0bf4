//! Which replica follows which tenant's feed. Each replica holds a session
//! advisory lock per tenant it follows, all on one connection of its own:
//! Postgres frees them when that replica stops or its connection breaks,
//! and another replica takes them on its next round. So one replica reads
//! each tenant's feed instead of every replica reading every feed (each
//! event is still claimed under the cursor's lock, so a lease that changes
//! hands mid-event applies nothing twice).
//!
//! The leases are shared out: on the same connection each replica holds a
//! shared lock that makes it a member, and takes no more than its share
//! (the followed tenants over the members, rounded up), giving up what is
//! beyond it when another replica joins. A tenant no replica took for a
//! whole round (the one whose share it is gave it up, cut off from its
//! feed) is rescued by any replica, beyond its share.
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
/// Rounds a rescued lease is kept beyond the share before it counts as
/// any other (and may be given up to even the shares out again): the
/// replica that gave it up may have come back by then.
const RESCUED_ROUNDS: u32 = 600;

/// What a round changes: the followers to stop (their leases given up or
/// lost) and the tenants to start following.
#[derive(Debug, Default)]
pub struct Changes {
    pub stop: Vec<String>,
    pub start: Vec<String>,
}

pub struct Leases {
    pool: PgPool,
    /// The feed's name, part of each lock's key.
    source: &'static str,
    /// The connection the locks live on; `None` until first needed and
    /// after it was lost.
    conn: Option<PgConnection>,
    /// Tenants whose lock this replica holds.
    held: HashSet<String>,
    /// Of those, the ones taken beyond the share, with the rounds left
    /// before they count as any other.
    rescued: HashMap<String, u32>,
    /// Tenants whose lease nobody held at the last round.
    free_before: HashSet<String>,
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
            rescued: HashMap::new(),
            free_before: HashSet::new(),
            strikes: HashMap::new(),
            benched: HashMap::new(),
        }
    }

    /// Starts a round: a tenant given up (or rescued) waits one round
    /// less. Whether the leases taken so far still hold: false (and none
    /// held any more) when their connection was lost.
    pub async fn next_round(&mut self) -> bool {
        count_down(&mut self.benched);
        count_down(&mut self.rescued);
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

    /// Shares out the leases of `followed` (every tenant with a cursor),
    /// `running` being those this replica follows now: gives up what is
    /// beyond its share and takes what it has room for, leaving out the
    /// tenants it gave up lately. When the leases' connection cannot be
    /// had, it starts every tenant not running: every replica then
    /// follows every tenant, as each event is claimed once anyway (slower,
    /// never stalled).
    pub async fn balance(&mut self, followed: Vec<String>, running: &HashSet<String>) -> Changes {
        let followed: Vec<String> = followed
            .into_iter()
            .filter(|t| !self.benched.contains_key(t))
            .collect();
        if let Err(error) = self.share_out(&followed).await {
            tracing::warn!(%error, "could not take feed leases: following the feeds without them");
            // Whatever it holds goes with the connection.
            self.lost();
            let start = followed
                .into_iter()
                .filter(|t| !running.contains(t))
                .collect();
            return Changes {
                stop: vec![],
                start,
            };
        }
        Changes {
            stop: running
                .iter()
                .filter(|t| !self.held.contains(*t))
                .cloned()
                .collect(),
            start: followed
                .into_iter()
                .filter(|t| self.held.contains(t) && !running.contains(t))
                .collect(),
        }
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
        if !self.held.contains(tenant) {
            return;
        }
        // Not given up: the next round finds out whether the connection
        // still holds it.
        if let Err(error) = bounded(self.give_up(&[tenant.to_owned()])).await {
            tracing::warn!(tenant, %error, "could not give up a feed lease");
        }
    }

    /// One round of [`Leases::balance`], bounded by [`TIMEOUT`] a query.
    async fn share_out(&mut self, followed: &[String]) -> anyhow::Result<()> {
        let (members, free) = bounded(self.standing(followed)).await?;
        let share = followed.len().div_ceil(members.max(1));
        let mut own: Vec<String> = self
            .held
            .iter()
            .filter(|t| !self.rescued.contains_key(*t))
            .cloned()
            .collect();
        if own.len() > share {
            own.sort();
            bounded(self.give_up(&own[share..])).await?;
        }
        // Nothing when it held more (it gave that up above).
        let room = share.saturating_sub(own.len());
        let mut fair = free.to_vec();
        fair.sort();
        fair.truncate(room);
        // Free now and a round ago: no replica with room took it.
        let stranded: Vec<String> = free
            .iter()
            .filter(|t| self.free_before.contains(*t) && !fair.contains(t))
            .cloned()
            .collect();
        let got = bounded(self.try_locks(&fair)).await?;
        self.held.extend(got);
        let rescued = bounded(self.try_locks(&stranded)).await?;
        for t in rescued {
            tracing::info!(tenant = %t, "rescued a feed lease no other replica took");
            self.rescued.insert(t.clone(), RESCUED_ROUNDS);
            self.held.insert(t);
        }
        self.free_before = free
            .into_iter()
            .filter(|t| !self.held.contains(t))
            .collect();
        Ok(())
    }

    /// The lease connection, taken (and made a member) when there is none.
    async fn connection(&mut self) -> sqlx::Result<&mut PgConnection> {
        if self.conn.is_none() {
            let mut conn = self.pool.connect_options().connect().await?;
            sqlx::query("SELECT pg_advisory_lock_shared(hashtextextended('follow:' || $1, 0))")
                .bind(self.source)
                .execute(&mut conn)
                .await?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// How many replicas share the leases out, and which of `tenants`
    /// nobody holds.
    async fn standing(&mut self, tenants: &[String]) -> sqlx::Result<(usize, Vec<String>)> {
        let source = self.source;
        let (members, free): (i64, Vec<String>) = sqlx::query_as(
            "WITH locks AS (
                 SELECT (classid::bigint << 32) | objid::bigint AS k FROM pg_locks
                 WHERE locktype = 'advisory' AND objsubid = 1 AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
             SELECT (SELECT count(*) FROM locks WHERE k = hashtextextended('follow:' || $2, 0)),
                    ARRAY(SELECT t FROM unnest($1::text[]) AS t
                          WHERE hashtextextended('follow:' || $2 || ':' || t, 0)
                                NOT IN (SELECT k FROM locks))",
        )
        .bind(tenants)
        .bind(source)
        .fetch_one(self.connection().await?)
        .await?;
        Ok((usize::try_from(members).unwrap_or(0), free))
    }

    /// Takes those of `tenants` whose lease is free; returns them.
    async fn try_locks(&mut self, tenants: &[String]) -> sqlx::Result<Vec<String>> {
        if tenants.is_empty() {
            return Ok(vec![]);
        }
        let source = self.source;
        sqlx::query_scalar(
            "SELECT t FROM unnest($1::text[]) AS t
             WHERE pg_try_advisory_lock(hashtextextended('follow:' || $2 || ':' || t, 0))",
        )
        .bind(tenants)
        .bind(source)
        .fetch_all(self.connection().await?)
        .await
    }

    /// Gives the leases of `tenants` up.
    async fn give_up(&mut self, tenants: &[String]) -> sqlx::Result<()> {
        for t in tenants {
            self.held.remove(t);
            self.rescued.remove(t);
        }
        let source = self.source;
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        sqlx::query(
            "SELECT pg_advisory_unlock(hashtextextended('follow:' || $2 || ':' || t, 0))
             FROM unnest($1::text[]) AS t",
        )
        .bind(tenants)
        .bind(source)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Drops the connection, and with it every lease.
    fn lost(&mut self) {
        self.conn = None;
        self.held.clear();
        self.rescued.clear();
    }
}

/// One round less for each; those at none leave.
fn count_down(rounds: &mut HashMap<String, u32>) {
    rounds.retain(|_, n| {
        *n -= 1;
        *n > 0
    });
}

/// `query`, failed when it takes longer than [`TIMEOUT`].
async fn bounded<T>(
    query: impl std::future::Future<Output = sqlx::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(TIMEOUT, query).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("timed out"),
    }
}
