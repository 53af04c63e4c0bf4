//! Which replica follows which tenant's feed. Each replica holds a session
//! advisory lock per tenant it follows, all on one connection of its own:
//! Postgres frees them when that replica stops or its connection breaks,
//! and another replica takes them on its next round. So one replica reads
//! each tenant's feed instead of every replica reading every feed (each
//! event is still claimed under the cursor's lock, so a lease that changes
//! hands mid-event applies nothing twice).
use sqlx::{ConnectOptions, PgConnection, PgPool};
use std::collections::HashSet;

pub struct Leases {
    pool: PgPool,
    /// The feed's name, part of each lock's key.
    source: &'static str,
    /// The connection the locks live on; `None` until first needed and
    /// after it broke.
    conn: Option<PgConnection>,
    /// Tenants whose lock this replica holds.
    held: HashSet<String>,
}

impl Leases {
    pub fn new(pool: PgPool, source: &'static str) -> Self {
        Leases {
            pool,
            source,
            conn: None,
            held: HashSet::new(),
        }
    }

    /// Whether the locks taken so far still hold: false (and none held
    /// any more) when their connection broke. Asked once a round.
    pub async fn alive(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return true;
        };
        if sqlx::query("SELECT 1").execute(conn).await.is_ok() {
            return true;
        }
        self.conn = None;
        self.held.clear();
        false
    }

    /// Takes the leases of `tenants` that no other replica holds (one
    /// query for all); whether this replica holds each now, by tenant.
    pub async fn take(&mut self, tenants: &[String]) -> sqlx::Result<HashSet<String>> {
        let wanted: Vec<String> = tenants
            .iter()
            .filter(|t| !self.held.contains(*t))
            .cloned()
            .collect();
        if !wanted.is_empty() {
            let conn = match self.conn.as_mut() {
                Some(c) => c,
                None => self
                    .conn
                    .insert(self.pool.connect_options().connect().await?),
            };
            let got: Vec<String> = sqlx::query_scalar(
                "SELECT t FROM unnest($1::text[]) AS t
                 WHERE pg_try_advisory_lock(hashtextextended('follow:' || $2 || ':' || t, 0))",
            )
            .bind(&wanted)
            .bind(self.source)
            .fetch_all(conn)
            .await?;
            self.held.extend(got);
        }
        Ok(self.held.clone())
    }

    /// Gives `tenant`'s lease up, for another replica to take.
    pub async fn give_up(&mut self, tenant: &str) -> sqlx::Result<()> {
        if !self.held.remove(tenant) {
            return Ok(());
        }
        if let Some(conn) = self.conn.as_mut() {
            sqlx::query(
                "SELECT pg_advisory_unlock(hashtextextended('follow:' || $2 || ':' || $1, 0))",
            )
            .bind(tenant)
            .bind(self.source)
            .execute(conn)
            .await?;
        }
        Ok(())
    }
}
