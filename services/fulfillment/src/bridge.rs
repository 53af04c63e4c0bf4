//! The WMS adapter stream (`ConnectAdapter`). An adapter says hello with
//! the nodes it serves and the last command it processed; the server sends
//! every later command for those nodes in sequence, at most a window ahead
//! of the adapter's acknowledgements (backpressure: the stream's buffer is
//! bounded and nothing more is read while the adapter lags), and sends
//! unacknowledged commands again when acknowledgements stop coming. Status
//! events are applied exactly once (see `events`) and answered with an
//! `EventAck`. A stream that stays silent for three heartbeat intervals is
//! closed; the adapter reconnects and carries on from its last command.
use crate::repo;
use crate::service::{DOMAIN, Fulfillment, db, invalid};
use crate::{events, inbound, messages};
use chrono::Utc;
use futures::{FutureExt as _, StreamExt as _};
use oms_kernel::{Tenant, Violations};
use oms_proto::fulfillment::{
    AdapterHello, AdapterWelcome, ConnectAdapterRequest, ConnectAdapterResponse, Heartbeat,
    command::Kind as Cmd, connect_adapter_request::Message as In,
    connect_adapter_response::Message as Out,
};
use oms_runtime::{status, time::to_timestamp};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};
use uuid::Uuid;

/// Responses buffered per stream before the sender waits for the adapter.
const BUFFER: usize = 256;
/// Commands read per query.
const BATCH: i64 = 500;
/// Status events applied in one transaction, at most.
const EVENT_BATCH: usize = 500;
const MAX_NODES: usize = 1000;

type Tx = mpsc::Sender<Result<ConnectAdapterResponse, Status>>;

/// How often the sender looks for commands when nothing woke it.
const POLL: Duration = Duration::from_millis(500);

/// Where one stream stands.
pub struct Progress {
    /// Highest sequence sent.
    pub sent: AtomicI64,
    /// Highest sequence the adapter acknowledged.
    pub acked: AtomicI64,
    /// When the adapter last sent anything.
    heard_at: Mutex<Instant>,
    /// When the acknowledgement last moved, commands were resent, or
    /// commands went out with none outstanding: the start of the wait the
    /// resend check measures.
    acked_at: Mutex<Instant>,
    /// Signalled on every acknowledgement.
    ack: Notify,
    /// Sequences of message commands sent and not yet acknowledged.
    messages: Mutex<BTreeSet<i64>>,
}

impl Progress {
    fn since_ack(&self) -> Duration {
        self.acked_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    fn acked_now(&self) {
        *self.acked_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn since_heard(&self) -> Duration {
        self.heard_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    fn heard_now(&self) {
        *self.heard_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

fn check_hello(h: &AdapterHello) -> Violations {
    let mut v = Violations::new();
    if h.adapter_id.trim().is_empty() || h.adapter_id.len() > 128 {
        v.add("hello.adapter_id", "required, at most 128 characters");
    }
    if h.node_ids.is_empty() {
        v.add("hello.node_ids", "at least one node is required");
    }
    if h.node_ids.len() > MAX_NODES {
        v.add("hello.node_ids", format!("at most {MAX_NODES} nodes"));
    }
    // A node no node can be would get no command, silently.
    for (i, n) in h.node_ids.iter().enumerate() {
        v.check(format!("hello.node_ids[{i}]"), oms_kernel::check_id(n));
    }
    if h.last_processed_sequence < 0 {
        v.add("hello.last_processed_sequence", "must be zero or more");
    }
    v
}

/// Opens an adapter stream: reads the hello, then serves the session.
pub async fn connect(
    r: Arc<Fulfillment>,
    tenant: Tenant,
    mut inbound: Streaming<ConnectAdapterRequest>,
) -> Result<ReceiverStream<Result<ConnectAdapterResponse, Status>>, Status> {
    let first = tokio::time::timeout(r.bridge.heartbeat * 3, inbound.message())
        .await
        .map_err(|_| {
            status::with_reason(Code::DeadlineExceeded, DOMAIN, "NO_HELLO", "no hello")
        })??;
    let Some(ConnectAdapterRequest {
        message: Some(In::Hello(hello)),
    }) = first
    else {
        return Err(status::with_reason(
            Code::FailedPrecondition,
            DOMAIN,
            "HELLO_FIRST",
            "the first message of an adapter stream must be hello",
        ));
    };
    let v = check_hello(&hello);
    if !v.is_empty() {
        return Err(invalid(v));
    }
    let mut nodes = hello.node_ids.clone();
    nodes.sort();
    nodes.dedup();
    let session = Uuid::now_v7();
    let start = hello.last_processed_sequence;
    repo::open_session(
        &r.pool,
        &tenant,
        &hello.adapter_id,
        session,
        &nodes,
        &hello.software,
        start,
        Utc::now(),
    )
    .await
    .map_err(db)?;
    let head = repo::head(&r.pool, &tenant, &nodes).await.map_err(db)?;
    let (tx, rx) = mpsc::channel(BUFFER);
    let welcome = ConnectAdapterResponse {
        message: Some(Out::Welcome(AdapterWelcome {
            session_id: session.to_string(),
            head_sequence: head,
            heartbeat_interval_seconds: r.bridge.heartbeat.as_secs().max(1) as i32,
        })),
    };
    tx.send(Ok(welcome))
        .await
        .map_err(|_| Status::cancelled("adapter went away"))?;
    tracing::info!(adapter = %hello.adapter_id, %session, nodes = ?nodes, from = start, "adapter connected");
    let progress = Arc::new(Progress {
        sent: AtomicI64::new(start),
        acked: AtomicI64::new(start),
        acked_at: Mutex::new(Instant::now()),
        heard_at: Mutex::new(Instant::now()),
        ack: Notify::new(),
        messages: Mutex::default(),
    });
    r.health.opened(
        session,
        tenant.as_str(),
        &hello.adapter_id,
        progress.clone(),
    );
    let done = r.shutdown.child_token();
    let s = Session {
        r,
        tenant,
        session,
        adapter: hello.adapter_id.clone(),
        nodes,
        progress,
        done,
        tx,
    };
    tokio::spawn(s.clone().send_commands());
    tokio::spawn(s.receive(inbound));
    Ok(ReceiverStream::new(rx))
}

#[derive(Clone)]
struct Session {
    r: Arc<Fulfillment>,
    tenant: Tenant,
    session: Uuid,
    adapter: String,
    nodes: Vec<String>,
    progress: Arc<Progress>,
    /// Ends both halves of the session.
    done: CancellationToken,
    tx: Tx,
}

impl Session {
    /// Sends commands after the adapter's position as they commit.
    async fn send_commands(self) {
        let p = &self.progress;
        let window = self.r.bridge.window;
        let mut cursor = p.sent.load(Ordering::Acquire);
        loop {
            if self.done.is_cancelled() {
                return;
            }
            let acked = p.acked.load(Ordering::Acquire);
            // Sent but unacknowledged for too long: the adapter lost them
            // (or they were never delivered); send them again.
            if cursor > acked && p.since_ack() >= self.r.bridge.resend_after {
                tracing::info!(session = %self.session, from = acked, "resending unacknowledged commands");
                cursor = acked;
                p.acked_now();
            }
            // Register for wake-ups before reading, so a command committed
            // between the read and the wait is not missed.
            let wake = self.r.waker.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let room = window - (cursor - acked);
            let commands = if room > 0 {
                match repo::commands_after(
                    &self.r.pool,
                    &self.tenant,
                    &self.nodes,
                    cursor,
                    BATCH.min(room),
                )
                .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = self.tx.send(Err(db(e))).await;
                        self.done.cancel();
                        return;
                    }
                }
            } else {
                Vec::new()
            };
            if commands.is_empty() {
                // Nothing new, or a whole window unacknowledged (the
                // adapter lags: backpressure).
                let ack = p.ack.notified();
                tokio::select! {
                    _ = wake => {}
                    _ = ack => {}
                    _ = self.done.cancelled() => return,
                    // Commands not announced by a feed event (cancels) and
                    // the resend check.
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            if cursor == p.acked.load(Ordering::Acquire) {
                // Nothing was outstanding: the wait for an acknowledgement
                // starts now, not at the last one (minutes ago on a quiet
                // stream, which resent every command at once).
                p.acked_now();
            }
            for c in commands {
                let seq = c.sequence;
                if matches!(c.kind, Some(Cmd::Message(_))) {
                    p.messages
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(seq);
                }
                let msg = ConnectAdapterResponse {
                    message: Some(Out::Command(c)),
                };
                tokio::select! {
                    sent = self.tx.send(Ok(msg)) => if sent.is_err() {
                        self.done.cancel();
                        return;
                    },
                    _ = self.done.cancelled() => return,
                }
                cursor = seq;
                p.sent.fetch_max(seq, Ordering::AcqRel);
            }
        }
    }

    /// Reads acknowledgements, status events and heartbeats until the
    /// adapter leaves, goes silent, breaks protocol or the server stops.
    /// Status events that arrived together are applied as one batch (one
    /// transaction): under load an adapter's pipelined events cost one
    /// commit per batch, not one each.
    async fn receive(self, mut inbound: Streaming<ConnectAdapterRequest>) {
        let silence = self.r.bridge.heartbeat * 3;
        // A message read while gathering a batch, handled next.
        let mut lookahead: Option<Option<ConnectAdapterRequest>> = None;
        let ended = loop {
            let msg = match lookahead.take() {
                Some(Some(m)) => m,
                Some(None) => break None,
                None => {
                    let next = tokio::select! {
                        n = tokio::time::timeout(silence, inbound.message()) => n,
                        _ = self.done.cancelled() => break None,
                    };
                    match next {
                        Err(_) => {
                            break Some(status::with_reason(
                                Code::DeadlineExceeded,
                                DOMAIN,
                                "ADAPTER_SILENT",
                                format!("nothing heard from the adapter for {silence:?}"),
                            ));
                        }
                        Ok(Err(_)) | Ok(Ok(None)) => break None,
                        Ok(Ok(Some(m))) => m,
                    }
                }
            };
            self.progress.heard_now();
            let answers = match msg.message {
                Some(In::Status(first)) => {
                    let mut batch = vec![first];
                    while batch.len() < EVENT_BATCH {
                        // Only what has already arrived: never wait for more.
                        match inbound.next().now_or_never() {
                            None => break,
                            Some(Some(Ok(ConnectAdapterRequest {
                                message: Some(In::Status(ev)),
                            }))) => batch.push(ev),
                            Some(Some(Ok(other))) => {
                                lookahead = Some(Some(other));
                                break;
                            }
                            Some(Some(Err(_)) | None) => {
                                lookahead = Some(None);
                                break;
                            }
                        }
                    }
                    events::apply(&self.r, &self.tenant, &self.nodes, batch)
                        .await
                        .map(|acks| acks.into_iter().map(Out::EventAck).collect())
                }
                other => self
                    .handle(ConnectAdapterRequest { message: other })
                    .await
                    .map(|out| out.into_iter().collect::<Vec<_>>()),
            };
            match answers {
                Ok(answers) => {
                    let acks = answers.iter().filter_map(|m| match m {
                        Out::EventAck(a) => Some(a),
                        _ => None,
                    });
                    self.r.health.answered(self.tenant.as_str(), acks);
                    let mut gone = false;
                    for m in answers {
                        let out = ConnectAdapterResponse { message: Some(m) };
                        if self.tx.send(Ok(out)).await.is_err() {
                            gone = true;
                            break;
                        }
                    }
                    if gone {
                        break None;
                    }
                }
                Err(st) => break Some(st),
            }
        };
        if let Some(st) = ended {
            let _ = self.tx.send(Err(st)).await;
        }
        self.done.cancel();
        self.r.health.closed(self.session);
        if let Err(e) = self.touch(false).await {
            tracing::warn!(error = %e.message(), "could not record the adapter's disconnect");
        }
        tracing::info!(session = %self.session, "adapter disconnected");
    }

    /// One message (status events usually arrive in batches, see `receive`).
    async fn handle(&self, msg: ConnectAdapterRequest) -> Result<Option<Out>, Status> {
        let p = &self.progress;
        match msg.message {
            None => Err(status::invalid_argument(
                DOMAIN,
                &Violations::one("message", "required"),
            )),
            Some(In::Hello(_)) => Err(status::with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "HELLO_TWICE",
                "hello is only the first message of a stream",
            )),
            Some(In::Ack(a)) => {
                let sent = p.sent.load(Ordering::Acquire);
                if a.sequence > sent {
                    return Err(status::invalid_argument(
                        DOMAIN,
                        &Violations::one(
                            "ack.sequence",
                            format!("{} was never sent (highest sent: {sent})", a.sequence),
                        ),
                    ));
                }
                if p.acked.fetch_max(a.sequence, Ordering::AcqRel) < a.sequence {
                    p.acked_now();
                }
                p.ack.notify_waiters();
                self.deliver_messages(a.sequence).await?;
                // Not written here: acknowledgements come with every
                // command; the session row follows at the next heartbeat.
                Ok(None)
            }
            Some(In::Heartbeat(_)) => {
                self.touch(true).await?;
                Ok(Some(Out::Heartbeat(Heartbeat {
                    send_time: Some(to_timestamp(Utc::now())),
                })))
            }
            Some(In::Status(ev)) => Ok(events::apply(&self.r, &self.tenant, &self.nodes, vec![ev])
                .await?
                .pop()
                .map(Out::EventAck)),
            Some(In::Note(note)) => Ok(Some(Out::EventAck(
                messages::from_node(&self.r, &self.tenant, &self.nodes, &self.adapter, note)
                    .await?,
            ))),
            Some(In::Receipt(rc)) => Ok(Some(Out::EventAck(
                inbound::receive(&self.r, &self.tenant, &self.nodes, rc).await?,
            ))),
        }
    }

    /// Marks messages delivered once their commands are acknowledged (a
    /// write only when a message was among them).
    async fn deliver_messages(&self, acked: i64) -> Result<(), Status> {
        let any = {
            let mut sent = self
                .progress
                .messages
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let later = sent.split_off(&(acked + 1));
            let any = !sent.is_empty();
            *sent = later;
            any
        };
        if any {
            repo::messages::delivered(&self.r.pool, &self.tenant, &self.nodes, acked, Utc::now())
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    /// Records the session's liveness and progress.
    async fn touch(&self, connected: bool) -> Result<(), Status> {
        let p = &self.progress;
        repo::touch_session(
            &self.r.pool,
            &self.tenant,
            self.session,
            p.sent.load(Ordering::Acquire),
            p.acked.load(Ordering::Acquire),
            connected,
            Utc::now(),
        )
        .await
        .map_err(db)
    }
}
