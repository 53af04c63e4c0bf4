//! Business metrics of ingest (RED metrics per method come from
//! oms-runtime): orders coming in, by channel and by what became of them.
use oms_proto::ingest::{SubmissionOutcome, SubmitChannelPayloadResponse};
use oms_runtime::status;
use opentelemetry::{KeyValue, global, metrics::Counter};
use tonic::Status;

#[derive(Clone)]
pub struct Metrics {
    submissions: Counter<u64>,
}

impl Metrics {
    pub fn new() -> Self {
        let submissions = global::meter("oms-ingest")
            .u64_counter("oms.ingest.submissions")
            .with_description(
                "Channel orders submitted, by tenant, channel, channel kind and outcome (created, updated, duplicate, rejected, failed)",
            )
            .build();
        Metrics { submissions }
    }

    /// One submission answered. Rejected: the order or payload was refused
    /// (bad signature, bad order, unknown SKU...); failed: the service could
    /// not take it (unavailable, internal), the channel may retry.
    pub fn submission(
        &self,
        tenant: &str,
        channel: &str,
        kind: &str,
        answer: &Result<SubmitChannelPayloadResponse, Status>,
    ) {
        let outcome = match answer {
            Ok(r) => match SubmissionOutcome::try_from(r.outcome).unwrap_or_default() {
                SubmissionOutcome::Created => "created",
                SubmissionOutcome::Updated => "updated",
                SubmissionOutcome::Duplicate => "duplicate",
                SubmissionOutcome::Unspecified => "unspecified",
            },
            Err(e) if status::is_server_failure(e.code()) => "failed",
            Err(_) => "rejected",
        };
        self.submissions.add(
            1,
            &[
                KeyValue::new("tenant", tenant.to_owned()),
                KeyValue::new("channel", channel.to_owned()),
                KeyValue::new("channel_kind", kind.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
