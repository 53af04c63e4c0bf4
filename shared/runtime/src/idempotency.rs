//! Idempotent mutations by `request_id` (AIP-155): the first response is
//! stored in the same transaction as the change, and a repeat of the same
//! request returns it without doing anything again. A `request_id` reused
//! for a different request is refused.
//!
//! Concurrent repeats are safe: the second insert waits on the first
//! transaction's row lock and then sees its committed response.
use oms_kernel::{RequestId, Tenant, Violations};
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use std::collections::HashMap;

pub enum Claim<R> {
    /// First time: do the work, then call [`complete`] in the same
    /// transaction ([`claim_many`] stored the answer already).
    New,
    /// Seen before: answer with this response.
    Replay(R),
}

/// The `ErrorInfo` reason of a `request_id` used before for a different
/// request.
pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("request_id was already used for a different request ({method})")]
    Reused { method: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("stored response cannot be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
}

impl IdempotencyError {
    pub fn into_status(self, domain: &str) -> tonic::Status {
        match self {
            IdempotencyError::Reused { .. } => crate::status::invalid_argument_because(
                domain,
                REQUEST_ID_REUSED,
                &Violations::one("request_id", self.to_string()),
            ),
            IdempotencyError::Db(e) => crate::status::from_db(domain, &e),
            IdempotencyError::Decode(e) => crate::status::internal(domain, &e),
        }
    }
}

/// Deletes up to `limit` records of requests first seen before `cutoff`;
/// how many it deleted. A repeat of such a request is a new request.
pub async fn purge(
    pool: &sqlx::PgPool,
    cutoff: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM idempotency WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM idempotency WHERE create_time < $1 LIMIT $2
            FOR UPDATE SKIP LOCKED))",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Claims `request_id` for `method` with this request, or finds the stored
/// response of an earlier identical request.
pub async fn claim<Req: Message, Resp: Message + Default>(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
    method: &str,
    request: &Req,
) -> Result<Claim<Resp>, IdempotencyError> {
    let hash = request_hash(request);
    let inserted = sqlx::query(
        "INSERT INTO idempotency (tenant, request_id, method, request_hash)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .bind(method)
    .bind(&hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    match stored(tx, tenant, request_id, method, &hash).await? {
        Some(r) => Ok(Claim::Replay(r)),
        // A committed claim always has its response (both are written in
        // one transaction), so a missing one is a bug worth failing loudly
        // on.
        None => Err(IdempotencyError::Db(sqlx::Error::Protocol(
            "idempotency row without response".into(),
        ))),
    }
}

/// The stored answer of an earlier request with this `request_id`, without
/// claiming it: `None` when there is none (yet), `Reused` when it was
/// another request (`hash`: [`request_hash`]). For work committed in
/// several transactions before its answer is stored with [`claim`] (a
/// snapshot import), which looks first.
pub async fn stored<Resp: Message + Default>(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
    method: &str,
    hash: &[u8],
) -> Result<Option<Resp>, IdempotencyError> {
    let row: Option<Stored> = sqlx::query_as(
        "SELECT method, request_hash, response FROM idempotency
         WHERE tenant = $1 AND request_id = $2",
    )
    .bind(tenant.as_str())
    .bind(request_id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((stored_method, stored_hash, response)) = row else {
        return Ok(None);
    };
    if stored_method != method || stored_hash != hash {
        return Err(IdempotencyError::Reused {
            method: stored_method,
        });
    }
    Ok(match response {
        Some(r) => Some(Resp::decode(r.as_slice())?),
        None => None,
    })
}

/// Stores the response of a claimed request; call it in the claim's
/// transaction.
pub async fn complete<Resp: Message>(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
    response: &Resp,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idempotency SET response = $3 WHERE tenant = $1 AND request_id = $2")
        .bind(tenant.as_str())
        .bind(request_id.as_str())
        .bind(response.encode_to_vec())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Gives up a claim in its transaction: the request failed, but the
/// transaction is committed for another reason (a state change it found),
/// and a retry must be evaluated anew.
pub async fn release(
    tx: &mut PgConnection,
    tenant: &Tenant,
    request_id: &RequestId,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency WHERE tenant = $1 AND request_id = $2")
        .bind(tenant.as_str())
        .bind(request_id.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A started mutation: the stored answer of a repeat, or a transaction that
/// holds the claim (finish it with [`finish`]).
pub enum Begin<R> {
    Replay(R),
    Tx(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Opens a transaction and claims `request_id` for `method` in it; errors
/// are statuses of `domain`.
pub async fn begin<Req: Message, Resp: Message + Default>(
    pool: &sqlx::PgPool,
    domain: &str,
    tenant: &Tenant,
    request_id: &RequestId,
    method: &str,
    request: &Req,
) -> Result<Begin<Resp>, tonic::Status> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| crate::status::from_db(domain, &e))?;
    match claim(&mut tx, tenant, request_id, method, request)
        .await
        .map_err(|e| e.into_status(domain))?
    {
        Claim::Replay(r) => Ok(Begin::Replay(r)),
        Claim::New => Ok(Begin::Tx(tx)),
    }
}

/// Stores `response` as the answer to the claim and commits.
pub async fn finish<Resp: Message>(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    domain: &str,
    tenant: &Tenant,
    request_id: &RequestId,
    response: Resp,
) -> Result<Resp, tonic::Status> {
    complete(&mut tx, tenant, request_id, &response)
        .await
        .map_err(|e| crate::status::from_db(domain, &e))?;
    tx.commit()
        .await
        .map_err(|e| crate::status::from_db(domain, &e))?;
    Ok(response)
}

/// A stored claim: method, request hash, response.
type Stored = (String, Vec<u8>, Option<Vec<u8>>);
/// A stored claim with its key: tenant, request id, then [`Stored`].
type StoredRow = (String, String, String, Vec<u8>, Option<Vec<u8>>);

/// One request of a batch to claim (see [`claim_many`]).
pub struct BatchClaim<'a> {
    pub tenant: &'a Tenant,
    pub request_id: &'a RequestId,
    pub method: &'a str,
    /// [`request_hash`] of the request.
    pub hash: &'a [u8],
    /// The encoded response, known before the work is done (a new record
    /// whose id and times the caller chose). It is stored with the claim,
    /// so the transaction must either do the work or [`release_many`] the
    /// claim. Storing it at once, rather than completing the claim later,
    /// saves an update of every row: a fifth of order intake's statement
    /// time.
    pub answer: &'a [u8],
}

/// What [`claim`] compares to recognise a repeat of the same request.
pub fn request_hash<Req: Message>(request: &Req) -> Vec<u8> {
    Sha256::digest(request.encode_to_vec()).to_vec()
}

/// [`claim`] for many requests in at most two statements, each claim
/// stored with its answer: one result per claim, in order. The claims must
/// name distinct (tenant, request_id) pairs; their rows are locked in key
/// order, so concurrent batches do not deadlock.
pub async fn claim_many<Resp: Message + Default>(
    tx: &mut PgConnection,
    claims: &[BatchClaim<'_>],
) -> Result<Vec<Result<Claim<Resp>, IdempotencyError>>, sqlx::Error> {
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by_key(|&i| (claims[i].tenant.as_str(), claims[i].request_id.as_str()));
    let sorted: Vec<&BatchClaim<'_>> = order.iter().map(|&i| &claims[i]).collect();
    let tenants: Vec<&str> = sorted.iter().map(|c| c.tenant.as_str()).collect();
    let ids: Vec<&str> = sorted.iter().map(|c| c.request_id.as_str()).collect();
    let methods: Vec<&str> = sorted.iter().map(|c| c.method).collect();
    let hashes: Vec<&[u8]> = sorted.iter().map(|c| c.hash).collect();
    let answers: Vec<&[u8]> = sorted.iter().map(|c| c.answer).collect();
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO idempotency (tenant, request_id, method, request_hash, response)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[])
         ON CONFLICT DO NOTHING RETURNING tenant, request_id",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(&methods)
    .bind(&hashes)
    .bind(&answers)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: std::collections::HashSet<(String, String)> = inserted.into_iter().collect();
    let key = |c: &BatchClaim<'_>| {
        (
            c.tenant.as_str().to_owned(),
            c.request_id.as_str().to_owned(),
        )
    };
    let seen: Vec<&BatchClaim<'_>> = claims
        .iter()
        .filter(|c| !inserted.contains(&key(c)))
        .collect();
    let mut stored: HashMap<(String, String), Stored> = HashMap::new();
    if !seen.is_empty() {
        let tenants: Vec<&str> = seen.iter().map(|c| c.tenant.as_str()).collect();
        let ids: Vec<&str> = seen.iter().map(|c| c.request_id.as_str()).collect();
        let rows: Vec<StoredRow> = sqlx::query_as(
            "SELECT i.tenant, i.request_id, i.method, i.request_hash, i.response
             FROM idempotency i JOIN UNNEST($1::text[], $2::text[]) AS x(t, r)
               ON i.tenant = x.t AND i.request_id = x.r",
        )
        .bind(&tenants)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        for (t, r, method, hash, response) in rows {
            stored.insert((t, r), (method, hash, response));
        }
    }
    Ok(claims
        .iter()
        .map(|c| {
            let k = key(c);
            if inserted.contains(&k) {
                return Ok(Claim::New);
            }
            let Some((method, hash, response)) = stored.remove(&k) else {
                return Err(IdempotencyError::Db(sqlx::Error::Protocol(
                    "idempotency claim neither inserted nor found".into(),
                )));
            };
            if method != c.method || hash != c.hash {
                return Err(IdempotencyError::Reused { method });
            }
            let response = response.ok_or_else(|| {
                IdempotencyError::Db(sqlx::Error::Protocol(
                    "idempotency row without response".into(),
                ))
            })?;
            Ok(Claim::Replay(Resp::decode(response.as_slice())?))
        })
        .collect())
}

/// [`release`] for many claims in one statement.
pub async fn release_many(
    tx: &mut PgConnection,
    claims: &[(&Tenant, &RequestId)],
) -> Result<(), sqlx::Error> {
    if claims.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = claims.iter().map(|c| c.0.as_str()).collect();
    let ids: Vec<&str> = claims.iter().map(|c| c.1.as_str()).collect();
    sqlx::query(
        "DELETE FROM idempotency i USING UNNEST($1::text[], $2::text[]) AS x(t, r)
         WHERE i.tenant = x.t AND i.request_id = x.r",
    )
    .bind(&tenants)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
