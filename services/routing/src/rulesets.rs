//! Rule sets: drafts, activation, rollback. Only drafts change; a rule set
//! that has been live is kept as it was, so every decision names rules
//! that still exist exactly as they were applied.
use crate::engine::rules;
use crate::repo;
use crate::service::{Begin, DOMAIN, Routing, checked, db, emit, invalid};
use chrono::Utc;
use oms_kernel::{Paging, Tenant, Violations, parse_name};
use oms_proto::routing::{watch_routing_events_response::Kind, *};
use oms_runtime::{status, time::to_timestamp};
use tonic::Status;
use uuid::Uuid;

/// Name of the rule set used when none is active.
pub const BUILTIN: &str = "ruleSets/builtin-default";

/// Name of the tenant's live rule set, for reading and simulating.
pub const ACTIVE: &str = "ruleSets/active";

fn rule_set_uuid(name: &str) -> Result<Uuid, String> {
    let id = parse_name(name, "ruleSets")?;
    Uuid::parse_str(id)
        .map_err(|_| format!("{name:?} is not a rule set name (`ruleSets/{{uuid}}`)"))
}

/// A rule set named to be read or simulated.
pub enum Named {
    /// The live one (`ruleSets/active`).
    Active,
    /// The built-in default (`ruleSets/builtin-default`), which decisions
    /// name when no rule set was ever activated.
    Builtin,
    Stored(Uuid),
}

/// Reads a rule set name that may also be `ruleSets/active` or the
/// built-in default's.
pub fn named(name: &str) -> Result<Named, String> {
    match name {
        ACTIVE => Ok(Named::Active),
        BUILTIN => Ok(Named::Builtin),
        _ => rule_set_uuid(name).map(Named::Stored).map_err(|_| {
            format!(
                "{name:?} is not a rule set name (`ruleSets/{{uuid}}`, `{ACTIVE}` or `{BUILTIN}`)"
            )
        }),
    }
}

/// The built-in default as a rule set a caller reads.
pub fn builtin() -> RuleSet {
    RuleSet {
        name: BUILTIN.to_owned(),
        ..rules::builtin_default()
    }
}

fn not_found(name: &str) -> Status {
    status::not_found(DOMAIN, "rule set", name)
}

/// The live rule set of `tenant`: (name, rules), the built-in default when
/// none was ever activated.
pub async fn live(r: &Routing, tenant: &Tenant) -> Result<(String, RuleSet), Status> {
    Ok(
        match repo::active_rule_set(&r.pool, tenant).await.map_err(db)? {
            Some(rs) => (rs.name.clone(), rs),
            None => (BUILTIN.to_owned(), builtin()),
        },
    )
}

pub async fn create(
    r: &Routing,
    tenant: &Tenant,
    req: CreateRuleSetRequest,
) -> Result<CreateRuleSetResponse, Status> {
    let body = match req.rule_set.clone() {
        None => Err(Violations::one("rule_set", "is required")),
        Some(rs) => rules::validate(&rs, "rule_set").into_result(rs),
    };
    let (rid, mut rs) = checked(&req.request_id, body)?;
    let (mut tx, rid) = match r.begin(tenant, rid, "CreateRuleSet", &req).await? {
        Begin::Replay(resp) => return Ok(resp),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    repo::lock_tenant(&mut tx, tenant).await.map_err(db)?;
    let id = Uuid::now_v7();
    let now = Utc::now();
    rs.name = format!("ruleSets/{id}");
    rs.rule_set_id = id.to_string();
    rs.state = RuleSetState::Draft as i32;
    rs.version = repo::next_version(&mut tx, tenant).await.map_err(db)?;
    rs.create_time = Some(to_timestamp(now));
    rs.activate_time = None;
    repo::insert_rule_set(&mut tx, tenant, id, &rs, now)
        .await
        .map_err(db)?;
    r.finish(
        tx,
        tenant,
        &rid,
        CreateRuleSetResponse { rule_set: Some(rs) },
    )
    .await
}

pub async fn update(
    r: &Routing,
    tenant: &Tenant,
    req: UpdateRuleSetRequest,
) -> Result<UpdateRuleSetResponse, Status> {
    let mut v = Violations::new();
    let patch = req.rule_set.clone();
    let id = match &patch {
        None => {
            v.add("rule_set", "is required");
            None
        }
        Some(p) => v.check("rule_set.name", rule_set_uuid(&p.name)),
    };
    let mut paths = req
        .update_mask
        .as_ref()
        .map(|m| m.paths.clone())
        .unwrap_or_default();
    if paths.is_empty() {
        paths = vec!["display_name".into(), "rules".into()];
    }
    for (i, p) in paths.iter().enumerate() {
        if p != "display_name" && p != "rules" {
            v.add(
                format!("update_mask.paths[{i}]"),
                format!("{p:?} cannot be changed; only display_name and rules"),
            );
        }
    }
    let target = patch.zip(id).filter(|_| v.is_empty()).ok_or(v);
    let (rid, (patch, id)) = checked(&req.request_id, target)?;
    let (mut tx, rid) = match r.begin(tenant, rid, "UpdateRuleSet", &req).await? {
        Begin::Replay(resp) => return Ok(resp),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    repo::lock_tenant(&mut tx, tenant).await.map_err(db)?;
    let Some(mut rs) = repo::rule_set(&mut *tx, tenant, id).await.map_err(db)? else {
        return Err(not_found(&patch.name));
    };
    if rs.state() != RuleSetState::Draft {
        return Err(status::failed_precondition(
            DOMAIN,
            "RULE_SET_NOT_DRAFT",
            &rs.name,
            "only drafts change; create a new rule set from this one instead",
        ));
    }
    for p in &paths {
        match p.as_str() {
            "display_name" => rs.display_name = patch.display_name.clone(),
            _ => rs.rules = patch.rules.clone(),
        }
    }
    let v = rules::validate(&rs, "rule_set");
    if !v.is_empty() {
        return Err(invalid(v));
    }
    repo::save_rule_set(&mut tx, tenant, id, &rs)
        .await
        .map_err(db)?;
    r.finish(
        tx,
        tenant,
        &rid,
        UpdateRuleSetResponse { rule_set: Some(rs) },
    )
    .await
}

pub async fn get(
    r: &Routing,
    tenant: &Tenant,
    req: GetRuleSetRequest,
) -> Result<GetRuleSetResponse, Status> {
    let which = named(&req.name).map_err(|e| invalid(Violations::one("name", e)))?;
    let rs = match which {
        Named::Active => repo::active_rule_set(&r.pool, tenant).await.map_err(db)?,
        Named::Builtin => Some(builtin()),
        Named::Stored(id) => repo::rule_set(&r.pool, tenant, id).await.map_err(db)?,
    };
    match rs {
        Some(rs) => Ok(GetRuleSetResponse { rule_set: Some(rs) }),
        None if req.name == ACTIVE => Err(status::with_reason(
            tonic::Code::NotFound,
            DOMAIN,
            "NO_ACTIVE_RULE_SET",
            "no rule set has been activated; plans use the built-in default (nearest node with the stock, split allowed, backorder the rest)",
        )),
        None => Err(not_found(&req.name)),
    }
}

pub async fn list(
    r: &Routing,
    tenant: &Tenant,
    req: ListRuleSetsRequest,
) -> Result<ListRuleSetsResponse, Status> {
    let mut v = Violations::new();
    let paging = Paging::<i64>::parse(&mut v, req.page_size, &req.page_token, (20, 100), 0);
    if !v.is_empty() {
        return Err(invalid(v));
    }
    let rows = repo::list_rule_sets(&r.pool, tenant, paging.after, paging.fetch())
        .await
        .map_err(db)?;
    let (rule_sets, next_page_token) = paging.page(rows, |rs| rs.version);
    Ok(ListRuleSetsResponse {
        rule_sets,
        next_page_token,
    })
}

pub async fn activate(
    r: &Routing,
    tenant: &Tenant,
    req: ActivateRuleSetRequest,
) -> Result<ActivateRuleSetResponse, Status> {
    let id = rule_set_uuid(&req.name).map_err(|e| Violations::one("name", e));
    let (rid, id) = checked(&req.request_id, id)?;
    let (mut tx, rid) = match r.begin(tenant, rid, "ActivateRuleSet", &req).await? {
        Begin::Replay(resp) => return Ok(resp),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    repo::lock_tenant(&mut tx, tenant).await.map_err(db)?;
    let Some(mut rs) = repo::rule_set(&mut *tx, tenant, id).await.map_err(db)? else {
        return Err(not_found(&req.name));
    };
    if rs.state() == RuleSetState::Active {
        return r
            .finish(
                tx,
                tenant,
                &rid,
                ActivateRuleSetResponse { rule_set: Some(rs) },
            )
            .await;
    }
    let now = Utc::now();
    supersede_active(&mut tx, tenant).await?;
    go_live(&mut tx, tenant, id, &mut rs, rid.as_str(), now).await?;
    repo::push_activation(&mut tx, tenant, id, now)
        .await
        .map_err(db)?;
    r.finish(
        tx,
        tenant,
        &rid,
        ActivateRuleSetResponse { rule_set: Some(rs) },
    )
    .await
}

/// Makes `rs` the live rule set and says so in the feed.
async fn go_live(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    id: Uuid,
    rs: &mut RuleSet,
    request_id: &str,
    now: chrono::DateTime<Utc>,
) -> Result<(), Status> {
    rs.state = RuleSetState::Active as i32;
    rs.activate_time = Some(to_timestamp(now));
    repo::save_rule_set(&mut *tx, tenant, id, rs)
        .await
        .map_err(db)?;
    let live = Kind::RuleSetActivated(RuleSetActivated {
        rule_set: Some(rs.clone()),
    });
    emit(tx, tenant, &rs.name, request_id, live).await
}

async fn supersede_active(tx: &mut sqlx::PgConnection, tenant: &Tenant) -> Result<(), Status> {
    if let Some(mut cur) = repo::active_rule_set(&mut *tx, tenant).await.map_err(db)? {
        cur.state = RuleSetState::Superseded as i32;
        let id = Uuid::parse_str(&cur.rule_set_id).map_err(|e| status::internal(DOMAIN, &e))?;
        repo::save_rule_set(tx, tenant, id, &cur)
            .await
            .map_err(db)?;
    }
    Ok(())
}

pub async fn rollback(
    r: &Routing,
    tenant: &Tenant,
    req: RollbackRuleSetRequest,
) -> Result<RollbackRuleSetResponse, Status> {
    let (rid, ()) = checked(&req.request_id, Ok(()))?;
    let (mut tx, rid) = match r.begin(tenant, rid, "RollbackRuleSet", &req).await? {
        Begin::Replay(resp) => return Ok(resp),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    repo::lock_tenant(&mut tx, tenant).await.map_err(db)?;
    let top = repo::top_activations(&mut tx, tenant).await.map_err(db)?;
    let [(current, _), (_, previous)] = top[..] else {
        return Err(status::failed_precondition(
            DOMAIN,
            "NOTHING_TO_ROLL_BACK",
            "ruleSets/active",
            "no earlier rule set was live before the current one",
        ));
    };
    let Some(mut rs) = repo::rule_set(&mut *tx, tenant, previous)
        .await
        .map_err(db)?
    else {
        return Err(not_found(&format!("ruleSets/{previous}")));
    };
    supersede_active(&mut tx, tenant).await?;
    repo::pop_activation(&mut tx, current).await.map_err(db)?;
    go_live(&mut tx, tenant, previous, &mut rs, rid.as_str(), Utc::now()).await?;
    r.finish(
        tx,
        tenant,
        &rid,
        RollbackRuleSetResponse { rule_set: Some(rs) },
    )
    .await
}
