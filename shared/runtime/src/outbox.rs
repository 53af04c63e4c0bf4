//! The transactional outbox and the `Watch...Events` feeds served from it.
//!
//! A service appends an event in the same transaction as the change that
//! caused it. Feeds read rows in commit-safe order `(txid, id)`, never past
//! the oldest transaction still running, so an event committed late can
//! never land behind a cursor a consumer already holds. The cursor is the
//! opaque string `<txid>.<id>`.
use chrono::{DateTime, Utc};
use futures::Stream;
use oms_kernel::Tenant;
use oms_proto::common::EventMeta;
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram},
};
use sqlx::{PgConnection, PgPool};
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

/// An event to append.
pub struct NewEvent<'a> {
    pub tenant: &'a Tenant,
    /// Past-tense type name (`OrderCreated`).
    pub event_type: &'a str,
    /// Resource name of the subject (`orders/…`).
    pub subject: &'a str,
    pub request_id: &'a str,
    /// The encoded event message, without its `EventMeta` (filled in when
    /// served, because the cursor is only known after insert).
    pub payload: Vec<u8>,
}

/// The W3C trace context an event carries, so that its consumers continue
/// the trace of the request that caused it.
#[derive(Debug, Clone, Default)]
pub struct TraceContext {
    traceparent: String,
    tracestate: String,
}

impl TraceContext {
    /// A context a caller passed in W3C form; `None` unless `traceparent`
    /// is `version-traceid-spanid-flags` in lowercase hex (2-32-16-2
    /// digits), the trace and span ids not all zero.
    pub fn from_w3c(traceparent: &str, tracestate: &str) -> Option<Self> {
        let parts: Vec<&str> = traceparent.split('-').collect();
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
        let ok = parts.len() == 4
            && hex(parts[0], 2)
            && parts[0] != "ff"
            && hex(parts[1], 32)
            && nonzero(parts[1])
            && hex(parts[2], 16)
            && nonzero(parts[2])
            && hex(parts[3], 2);
        ok.then(|| Self {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.to_owned(),
        })
    }

    /// The context a request message names in its own fields (one of many
    /// requests in a call, each in its own trace): None when `traceparent`
    /// is empty, what is wrong with it when it is malformed.
    pub fn named(traceparent: &str, tracestate: &str) -> Result<Option<Self>, &'static str> {
        if traceparent.is_empty() {
            return Ok(None);
        }
        Self::from_w3c(traceparent, tracestate)
            .map(Some)
            .ok_or("must be a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>")
    }

    /// W3C `traceparent` (empty: no trace) and `tracestate`, to send on.
    pub fn w3c(&self) -> (&str, &str) {
        (&self.traceparent, &self.tracestate)
    }

    /// The context of the current span (empty outside a traced request).
    pub fn current() -> Self {
        let mut carrier = HashMap::new();
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
        Self {
            traceparent: carrier.remove("traceparent").unwrap_or_default(),
            tracestate: carrier.remove("tracestate").unwrap_or_default(),
        }
    }
}

/// Appends an event in the caller's transaction and wakes feed readers when
/// it commits. Carries the current trace context along.
pub async fn append(tx: &mut PgConnection, ev: NewEvent<'_>) -> Result<Uuid, sqlx::Error> {
    let trace = TraceContext::current();
    let event_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox (tenant, event_id, event_type, subject, request_id, traceparent, tracestate, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(ev.tenant.as_str())
    .bind(event_id)
    .bind(ev.event_type)
    .bind(ev.subject)
    .bind(ev.request_id)
    .bind(&trace.traceparent)
    .bind(&trace.tracestate)
    .bind(ev.payload)
    .execute(&mut *tx)
    .await?;
    Ok(event_id)
}

/// Appends many events in one statement (batch writers append hundreds
/// per transaction), all with the current trace context.
pub async fn append_many(
    tx: &mut PgConnection,
    events: &[NewEvent<'_>],
) -> Result<(), sqlx::Error> {
    let trace = TraceContext::current();
    let traced: Vec<(&NewEvent<'_>, &TraceContext)> = events.iter().map(|e| (e, &trace)).collect();
    append_traced(tx, &traced).await
}

/// Appends many events in one statement, each with the trace context of
/// the request that caused it (a group-commit writer serves many requests
/// in one transaction).
pub async fn append_traced(
    tx: &mut PgConnection,
    events: &[(&NewEvent<'_>, &TraceContext)],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let tenants: Vec<&str> = events.iter().map(|(e, _)| e.tenant.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|(e, _)| e.event_type).collect();
    let subjects: Vec<&str> = events.iter().map(|(e, _)| e.subject).collect();
    let requests: Vec<&str> = events.iter().map(|(e, _)| e.request_id).collect();
    let parents: Vec<&str> = events.iter().map(|(_, t)| t.traceparent.as_str()).collect();
    let states: Vec<&str> = events.iter().map(|(_, t)| t.tracestate.as_str()).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|(e, _)| e.payload.as_slice()).collect();
    sqlx::query(
        "INSERT INTO outbox (tenant, event_id, event_type, subject, request_id, traceparent, tracestate, payload)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[])",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(&types)
    .bind(&subjects)
    .bind(&requests)
    .bind(&parents)
    .bind(&states)
    .bind(&payloads)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A position in a feed, ordered as the feed is: by transaction, then by
/// id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    txid: u64,
    id: i64,
}

impl Cursor {
    /// The empty cursor: from the oldest event kept, whatever the
    /// retention deleted before it (a reader that wants what is there).
    pub const OLDEST_KEPT: Cursor = Cursor { txid: 0, id: -1 };
    /// `0.0` (the default), before every event: a reader that must see
    /// every event since the start is refused, like any other cursor, when
    /// the retention deleted some it never read.
    pub const ORIGIN: Cursor = Cursor { txid: 0, id: 0 };

    /// A position as the database gives it: the transaction id as text
    /// (an `xid8`), and the row id.
    fn from_db((txid, id): (&str, i64)) -> Cursor {
        Cursor {
            txid: txid.parse().unwrap_or_default(),
            id,
        }
    }

    /// Parses an `after_cursor`; empty is [`Cursor::OLDEST_KEPT`].
    pub fn parse(s: &str) -> Result<Cursor, String> {
        if s.is_empty() {
            return Ok(Cursor::OLDEST_KEPT);
        }
        let bad = || format!("{s:?} is not a cursor from this feed");
        let (t, i) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            txid: t.parse().map_err(|_| bad())?,
            id: i.parse().map_err(|_| bad())?,
        })
    }

    /// The position just before this event's: a feed followed from it
    /// starts with this event. Messages derived from one event carry it on
    /// all but the last, so resuming after any of them misses nothing.
    pub fn before(&self) -> Cursor {
        Cursor {
            txid: self.txid,
            id: self.id - 1,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.txid, self.id)
    }
}

/// Where the feed stands now: every event of a transaction that committed
/// before this call lies at or before the cursor, so a figure read after
/// it and a feed followed from it together miss nothing (the feed may
/// repeat a change the figure already shows).
pub async fn head(pool: &PgPool) -> Result<Cursor, sqlx::Error> {
    let (xmin,): (String,) = sqlx::query_as("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        .fetch_one(pool)
        .await?;
    let xmin: u64 = xmin.parse().unwrap_or_default();
    Ok(Cursor {
        // Events are read in (txid, id) order and only below the readers'
        // snapshot xmin: everything after this cursor has txid >= xmin.
        txid: xmin.saturating_sub(1),
        id: i64::MAX,
    })
}

/// One stored event.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub cursor: Cursor,
    pub tenant: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub subject: String,
    pub request_id: String,
    pub traceparent: String,
    pub tracestate: String,
    pub payload: Vec<u8>,
    pub occur_time: DateTime<Utc>,
}

impl OutboxRow {
    pub fn meta(&self) -> EventMeta {
        EventMeta {
            event_id: self.event_id.to_string(),
            occur_time: Some(crate::time::to_timestamp(self.occur_time)),
            tenant: self.tenant.clone(),
            cursor: self.cursor.to_string(),
            subject: self.subject.clone(),
            request_id: self.request_id.clone(),
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
        }
    }
}

type Row = (
    i64,
    String,
    String,
    Uuid,
    String,
    String,
    String,
    String,
    String,
    Vec<u8>,
    DateTime<Utc>,
    Option<String>,
    Option<i64>,
);

/// Up to `limit` committed events of `tenant` after a cursor, and the
/// tenant's horizon when it lies after that cursor (the retention deleted
/// events the reader never got), read in one statement: one snapshot, so
/// a deletion is either seen with its horizon or not at all.
pub struct Page {
    pub rows: Vec<OutboxRow>,
    /// Known only when `rows` is not empty.
    pub overtaken_by: Option<Cursor>,
}

/// Reads up to `limit` committed events of `tenant` after `after`.
pub async fn read_after(
    pool: &PgPool,
    tenant: &Tenant,
    after: Cursor,
    limit: i64,
) -> Result<Page, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT o.id, o.txid::text, o.tenant, o.event_id, o.event_type, o.subject, o.request_id,
                o.traceparent, o.tracestate, o.payload, o.occur_time, h.txid::text, h.id
         FROM outbox o
         LEFT JOIN outbox_horizon h
           ON h.tenant = $1 AND (h.txid, h.id) > ($2::text::xid8, $3)
         WHERE o.tenant = $1
           AND (o.txid, o.id) > ($2::text::xid8, $3)
           AND o.txid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY o.txid, o.id
         LIMIT $4",
    )
    .bind(tenant.as_str())
    .bind(after.txid.to_string())
    .bind(after.id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let overtaken_by = rows
        .first()
        .and_then(|r| r.11.as_deref().zip(r.12).map(Cursor::from_db));
    let rows = rows
        .into_iter()
        .map(|r| OutboxRow {
            cursor: Cursor::from_db((&r.1, r.0)),
            tenant: r.2,
            event_id: r.3,
            event_type: r.4,
            subject: r.5,
            request_id: r.6,
            traceparent: r.7,
            tracestate: r.8,
            payload: r.9,
            occur_time: r.10,
        })
        .collect();
    Ok(Page { rows, overtaken_by })
}

/// The tenant's horizon (the last event the retention deleted) when it
/// lies after `after`: a reader there missed events for good.
async fn horizon_after(
    pool: &PgPool,
    tenant: &Tenant,
    after: Cursor,
) -> Result<Option<Cursor>, sqlx::Error> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT txid::text, id FROM outbox_horizon
         WHERE tenant = $1 AND (txid, id) > ($2::text::xid8, $3)",
    )
    .bind(tenant.as_str())
    .bind(after.txid.to_string())
    .bind(after.id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(txid, id)| Cursor::from_db((&txid, id))))
}

/// Wakes feed readers when events were appended, by any process. It
/// watches the outbox's highest id rather than using LISTEN/NOTIFY: a
/// NOTIFY serialises the commits of every transaction that sends one,
/// which would cap the write throughput of the whole service.
#[derive(Clone, Default)]
pub struct FeedWaker(Arc<Notify>);

/// How often the outbox is checked for new events.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

impl FeedWaker {
    /// Resolves on the next wake-up (enable it before checking for work).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.notified()
    }

    /// Wakes readers now, for a commit made by this process: they need not
    /// wait for the watch to see it (commits of other processes still
    /// reach them through the watch).
    pub fn wake(&self) {
        self.0.notify_waiters();
    }

    /// Starts watching the service's outbox until `shutdown`.
    pub fn start(pool: &PgPool, shutdown: CancellationToken) -> Self {
        let waker = FeedWaker::default();
        let w = waker.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut last: i64 = -1;
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match sqlx::query_scalar::<_, i64>("SELECT COALESCE(max(id), 0) FROM outbox")
                    .fetch_one(&pool)
                    .await
                {
                    Ok(head) if head != last => {
                        last = head;
                        w.0.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "outbox watch failed; retrying"),
                }
            }
        });
        waker
    }
}

/// Why a feed stopped.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Events after the reader's cursor were deleted by the retention
    /// before the reader got them.
    #[error(
        "events after cursor {after} are gone (kept for OMS_EVENT_RETENTION_DAYS; deleted up to {horizon}): follow from the start (an empty cursor) or from a newer cursor"
    )]
    Expired { after: Cursor, horizon: Cursor },
    /// The reader's cursor lies beyond every event the feed has: not one
    /// this feed handed out (another database's, say). Followed, it would
    /// skip every event until the feed caught up with it.
    #[error("{after} is ahead of this feed (whose head is {head}): not a cursor from this feed")]
    Ahead { after: Cursor, head: Cursor },
}

/// The `ErrorInfo` reason of a feed refused because the retention deleted
/// events after its cursor.
pub const CURSOR_EXPIRED: &str = "CURSOR_EXPIRED";

/// Bucket bounds of feed lag, in seconds: from the 50 ms a reader waits
/// between reads to an hour, fine around the minute the lag alert
/// watches. The SDK's defaults (0, 5, 10 … 10,000, made for milliseconds)
/// put every lag under 5 s in one bucket.
const LAG_BOUNDS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];

/// Whether a feed's status says its cursor expired: resuming from that
/// cursor cannot succeed.
pub fn is_cursor_expired(status: &tonic::Status) -> bool {
    crate::status::reason(status) == CURSOR_EXPIRED
}

impl FeedError {
    /// As a gRPC status: FAILED_PRECONDITION, reason `CURSOR_EXPIRED`, for
    /// a cursor the retention overtook; database trouble as `from_db`.
    pub fn status(&self, domain: &str) -> tonic::Status {
        match self {
            FeedError::Db(e) => crate::status::from_db(domain, e),
            FeedError::Expired { after, .. } => crate::status::failed_precondition(
                domain,
                CURSOR_EXPIRED,
                &after.to_string(),
                &self.to_string(),
            ),
            FeedError::Ahead { .. } => crate::status::invalid_argument(
                domain,
                &oms_kernel::Violations::one("after_cursor", self.to_string()),
            ),
        }
    }
}

/// Deletes up to `limit` of the oldest events (by id) that occurred before
/// `cutoff`, moving each tenant's horizon past what it deleted; how many
/// it deleted. Only a prefix of the oldest events is looked at, so a
/// purge with nothing old enough costs one short index scan.
pub async fn purge(pool: &PgPool, cutoff: DateTime<Utc>, limit: i64) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "WITH gone AS (
            DELETE FROM outbox WHERE id = ANY(ARRAY(
                SELECT id FROM (SELECT id, occur_time FROM outbox ORDER BY id LIMIT $2) oldest
                WHERE occur_time < $1))
            RETURNING tenant, txid, id
         ), last AS (
            SELECT DISTINCT ON (tenant) tenant, txid, id FROM gone ORDER BY tenant, txid DESC, id DESC
         ), moved AS (
            INSERT INTO outbox_horizon (tenant, txid, id) SELECT tenant, txid, id FROM last
            ON CONFLICT (tenant) DO UPDATE SET txid = EXCLUDED.txid, id = EXCLUDED.id
            WHERE (outbox_horizon.txid, outbox_horizon.id) < (EXCLUDED.txid, EXCLUDED.id)
         )
         SELECT count(*) FROM gone",
    )
    .bind(cutoff)
    .bind(limit)
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}

/// Follows the feed of `tenant` after `after`: every stored event, then new
/// ones as they commit, until `shutdown` or the receiver goes away. Ends
/// with [`FeedError::Expired`] when the retention deleted events after the
/// cursor before they were read (an empty cursor follows from the oldest
/// event kept).
pub fn follow(
    pool: PgPool,
    tenant: Tenant,
    after: Cursor,
    waker: FeedWaker,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<OutboxRow, FeedError>> + Send + 'static {
    follow_in_pages(pool, tenant, after, waker, shutdown, 500)
}

/// [`follow`], reading up to `page` events at once when behind: a reader
/// that handles a page at a time (one figure per SKU a page touched) makes
/// fewer, larger pages of a burst.
pub fn follow_in_pages(
    pool: PgPool,
    tenant: Tenant,
    after: Cursor,
    waker: FeedWaker,
    shutdown: CancellationToken,
    page: i64,
) -> impl Stream<Item = Result<OutboxRow, FeedError>> + Send + 'static {
    struct State {
        pool: PgPool,
        tenant: Tenant,
        cursor: Cursor,
        waker: FeedWaker,
        shutdown: CancellationToken,
        buffer: VecDeque<OutboxRow>,
        lag: Histogram<f64>,
        /// The metrics' attributes: every row of a feed is of its tenant.
        of_tenant: [KeyValue; 1],
        /// Ended (expired): nothing more is read.
        done: bool,
        /// The horizon was checked on an empty page (see below).
        horizon_checked: bool,
        expired: Counter<u64>,
    }
    impl State {
        /// Ends the feed: the retention deleted events up to `horizon`
        /// that this reader never got.
        fn expire(&mut self, horizon: Cursor) -> FeedError {
            self.done = true;
            self.expired.add(1, &self.of_tenant);
            FeedError::Expired {
                after: self.cursor,
                horizon,
            }
        }
    }
    let lag = opentelemetry::global::meter("oms-runtime")
        .f64_histogram("oms.feed.lag")
        .with_unit("s")
        .with_description(
            "Time from an event's commit to its delivery to a feed reader (Watch...Events), by tenant: how far readers are behind",
        )
        .with_boundaries(LAG_BOUNDS.to_vec())
        .build();
    // A reader that gets this missed events for good: it must be resynced
    // (an alert rule watches it; nothing else shows a reader stuck on it).
    let expired = opentelemetry::global::meter("oms-runtime")
        .u64_counter("oms.feed.expired")
        .with_description(
            "Feed readers (Watch...Events) refused because the event retention deleted events after their cursor, by tenant",
        )
        .build();
    let of_tenant = [KeyValue::new("tenant", tenant.as_str().to_owned())];
    let state = State {
        pool,
        tenant,
        cursor: after,
        waker,
        shutdown,
        buffer: VecDeque::new(),
        lag,
        of_tenant,
        done: false,
        horizon_checked: false,
        expired,
    };
    futures::stream::unfold(state, move |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if let Some(row) = s.buffer.pop_front() {
                s.cursor = row.cursor;
                let behind = (Utc::now() - row.occur_time).as_seconds_f64().max(0.0);
                s.lag.record(behind, &s.of_tenant);
                return Some((Ok(row), s));
            }
            if s.shutdown.is_cancelled() {
                return None;
            }
            // Register interest before reading so a commit between the read
            // and the wait is not missed.
            let notified = s.waker.0.clone();
            let notified = notified.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match read_after(&s.pool, &s.tenant, s.cursor, page).await {
                Ok(page) if !page.rows.is_empty() => {
                    // An empty cursor follows from the oldest event kept.
                    if let Some(horizon) = page.overtaken_by
                        && s.cursor != Cursor::OLDEST_KEPT
                    {
                        let e = s.expire(horizon);
                        return Some((Err(e), s));
                    }
                    s.buffer.extend(page.rows)
                }
                Ok(_) => {
                    // Nothing after the cursor: a reader coming back after
                    // the retention deleted everything it missed is told so
                    // now, not at the next event. Once: a reader that has
                    // read up to here keeps up from now on, and the
                    // retention deletes only old events.
                    if !s.horizon_checked && s.cursor != Cursor::OLDEST_KEPT {
                        s.horizon_checked = true;
                        match horizon_after(&s.pool, &s.tenant, s.cursor).await {
                            Ok(Some(horizon)) => {
                                let e = s.expire(horizon);
                                return Some((Err(e), s));
                            }
                            Ok(None) => {}
                            Err(e) => return Some((Err(e.into()), s)),
                        }
                        // Every cursor the feed hands out lies at or
                        // before its head (events are read below the
                        // readers' snapshot xmin, which only grows).
                        match head(&s.pool).await {
                            Ok(head) if s.cursor > head => {
                                s.done = true;
                                let e = FeedError::Ahead {
                                    after: s.cursor,
                                    head,
                                };
                                return Some((Err(e), s));
                            }
                            Ok(_) => {}
                            Err(e) => return Some((Err(e.into()), s)),
                        }
                    }
                    // Rows held back behind a running transaction produce no
                    // notification of their own: re-check now and then.
                    tokio::select! {
                        _ = notified => {}
                        _ = s.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                Err(e) => return Some((Err(e.into()), s)),
            }
        }
    })
}

/// The stream a `Watch...Events` RPC serves: `after_cursor` checked (a field
/// violation when it is not a cursor), then every event of `tenant` after
/// it, decoded as `T`, with its metadata; failures are statuses of `domain`.
pub fn watch<T: prost::Message + Default + 'static>(
    pool: PgPool,
    tenant: Tenant,
    after_cursor: &str,
    waker: FeedWaker,
    shutdown: CancellationToken,
    domain: &'static str,
) -> Result<impl Stream<Item = Result<(T, EventMeta), tonic::Status>> + Send + 'static, tonic::Status>
{
    watch_only(
        pool,
        tenant,
        after_cursor,
        (waker, shutdown),
        domain,
        HashSet::new(),
    )
}

/// [`watch`], sending only the events whose type is one of `types` (every
/// event when empty): the others are passed over by their stored type,
/// before they are decoded. Each event sent carries its own cursor, so a
/// reader resuming after it skips the others again.
pub fn watch_only<T: prost::Message + Default + 'static>(
    pool: PgPool,
    tenant: Tenant,
    after_cursor: &str,
    (waker, shutdown): (FeedWaker, CancellationToken),
    domain: &'static str,
    types: HashSet<&'static str>,
) -> Result<impl Stream<Item = Result<(T, EventMeta), tonic::Status>> + Send + 'static, tonic::Status>
{
    use futures::StreamExt as _;
    let after = Cursor::parse(after_cursor).map_err(|e| {
        crate::status::invalid_argument(domain, &oms_kernel::Violations::one("after_cursor", e))
    })?;
    Ok(follow(pool, tenant, after, waker, shutdown)
        .filter(move |row| {
            let wanted = match row {
                Ok(r) => types.is_empty() || types.contains(r.event_type.as_str()),
                Err(_) => true,
            };
            std::future::ready(wanted)
        })
        .map(move |row| {
            let row = row.map_err(|e| e.status(domain))?;
            let event = T::decode(row.payload.as_slice())
                .map_err(|e| crate::status::internal(domain, &e))?;
            Ok((event, row.meta()))
        }))
}

#[cfg(test)]
mod tests {
    use super::{Cursor, TraceContext};

    #[test]
    fn only_a_well_formed_traceparent_is_taken() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::from_w3c(good, "k=v").unwrap();
        assert_eq!(
            (t.traceparent.as_str(), t.tracestate.as_str()),
            (good, "k=v")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::from_w3c(bad, "").is_none(), "{bad}");
        }
    }

    #[test]
    fn cursor_round_trip() {
        let c = Cursor::parse("123.45").unwrap();
        assert_eq!(c.to_string(), "123.45");
        assert_eq!(Cursor::parse("").unwrap(), Cursor::OLDEST_KEPT);
        assert_eq!(Cursor::parse("0.0").unwrap(), Cursor::ORIGIN);
        assert!(Cursor::OLDEST_KEPT < Cursor::ORIGIN);
        assert!(Cursor::parse("x").is_err());
        assert!(Cursor::parse("1.x").is_err());
    }
}
