//! Batched claims against a real Postgres: new, replayed and reused
//! request ids answered in one batch, and released claims claimable again.
//! (Its own test binary: the OTLP test in `it` installs the global
//! subscriber that `TestDb` would install first.)
#![allow(clippy::unwrap_used)]
use oms_kernel::{RequestId, Tenant};
use oms_runtime::idempotency::{self, BatchClaim, Claim, IdempotencyError};
use oms_testkit::TestDb;
use prost::Message;
use prost_types::Duration as Pb;

fn answer(seconds: i64) -> Pb {
    Pb { seconds, nanos: 0 }
}

#[tokio::test]
async fn a_batch_of_claims_answers_new_replayed_and_reused_requests() {
    let db = TestDb::new().await;
    let pool = db.pool("idem", None).await;
    let (a, b) = (Tenant::parse("a").unwrap(), Tenant::parse("b").unwrap());
    let r = |s: &str| RequestId::parse(s).unwrap();
    let (r1, r2, r3) = (r("r1"), r("r2"), r("r3"));
    let (one, two, three) = (answer(1), answer(2), answer(3));
    let encoded = |p: &Pb| p.encode_to_vec();
    let (e1, e2, e3, none) = (encoded(&one), encoded(&two), encoded(&three), vec![]);
    let claim = |t, id, hash: &'static [u8], answer| BatchClaim {
        tenant: t,
        request_id: id,
        method: "M",
        hash,
        answer,
    };

    // First batch: all new, stored with their answers, and committed.
    let mut tx = pool.begin().await.unwrap();
    let first = idempotency::claim_many::<Pb>(
        &mut tx,
        &[
            claim(&a, &r1, b"x", &e1),
            claim(&a, &r2, b"y", &e2),
            claim(&b, &r1, b"z", &e3),
        ],
    )
    .await
    .unwrap();
    assert!(first.iter().all(|c| matches!(c, Ok(Claim::New))));
    tx.commit().await.unwrap();

    // Second batch: a repeat, a reuse with another body, another tenant's
    // repeat, and a new id.
    let mut tx = pool.begin().await.unwrap();
    let second = idempotency::claim_many::<Pb>(
        &mut tx,
        &[
            claim(&a, &r3, b"w", &none),
            claim(&b, &r1, b"z", &none),
            claim(&a, &r2, b"other", &none),
            claim(&a, &r1, b"x", &none),
        ],
    )
    .await
    .unwrap();
    assert!(matches!(second[0], Ok(Claim::New)));
    assert!(matches!(&second[1], Ok(Claim::Replay(p)) if *p == three));
    assert!(matches!(&second[2], Err(IdempotencyError::Reused { method }) if method == "M"));
    assert!(matches!(&second[3], Ok(Claim::Replay(p)) if *p == one));
    // The new claim given up: the same id is new again afterwards.
    idempotency::release_many(&mut tx, &[(&a, &r3)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let third = idempotency::claim_many::<Pb>(&mut tx, &[claim(&a, &r3, b"v", &none)])
        .await
        .unwrap();
    assert!(matches!(third[0], Ok(Claim::New)));
}
