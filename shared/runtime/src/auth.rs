//! Bearer-token authentication. Every RPC but health and reflection needs
//! `authorization: Bearer <JWT>` signed with the shared HS256 secret; the
//! token's `tenant` claim scopes the call. The tenant is never taken from a
//! request field.
use crate::config::AuthConfig;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use oms_kernel::Tenant;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Request, Status};

const DOMAIN: &str = "auth.oms";

/// The claims of an OMS token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who: a user, a service (`service:orders`) or an adapter.
    pub sub: String,
    /// The tenant every call with this token is scoped to.
    pub tenant: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// The authenticated caller, put into every request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: Tenant,
    pub subject: String,
}

/// The caller of a request that went through [`Authenticator`].
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| {
        // Only reachable if a service forgot the interceptor: a server bug.
        crate::status::with_reason(
            Code::Unauthenticated,
            DOMAIN,
            "NO_CALLER",
            "no authenticated caller",
        )
    })
}

/// Signs tokens (the CLI, tests, and services calling each other).
#[derive(Clone)]
pub struct TokenIssuer {
    key: Arc<EncodingKey>,
    issuer: String,
    audience: String,
}

impl TokenIssuer {
    pub fn new(cfg: &AuthConfig) -> Self {
        Self {
            key: Arc::new(EncodingKey::from_secret(cfg.jwt_secret.expose().as_bytes())),
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
        }
    }

    pub fn mint(&self, tenant: &Tenant, subject: &str, ttl: Duration) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: subject.to_owned(),
            tenant: tenant.as_str().to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .expect("HS256 signing with an in-memory key cannot fail")
    }
}

/// A tonic interceptor that checks the bearer token and attaches the
/// [`Caller`].
#[derive(Clone)]
pub struct Authenticator {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
    /// Tokens already checked, with their expiry: a client sends the same
    /// token with every call until it renews it, and checking signature and
    /// claims again costs more than finding the token here.
    verified: Arc<Mutex<HashMap<String, (Caller, u64)>>>,
}

/// Seconds of clock skew allowed on `exp`.
const LEEWAY: u64 = 30;
/// Verified tokens remembered at most (then forgotten all at once).
const MAX_VERIFIED: usize = 4096;

/// Whether a token expiring at `exp` is still good at `now` (the same rule
/// as the full check: `exp` plus the leeway not yet past).
fn unexpired(exp: u64, now: u64) -> bool {
    now <= exp.saturating_add(LEEWAY)
}

impl Authenticator {
    pub fn new(cfg: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY;
        Self {
            key: Arc::new(DecodingKey::from_secret(cfg.jwt_secret.expose().as_bytes())),
            validation: Arc::new(validation),
            verified: Arc::default(),
        }
    }

    /// Checks a raw `authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, Status> {
        let header = header.ok_or_else(|| {
            unauthenticated(
                "TOKEN_MISSING",
                "missing authorization: Bearer <token> metadata",
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                unauthenticated("TOKEN_MALFORMED", "authorization must be 'Bearer <token>'")
            })?;
        let token = token.trim();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((caller, exp)) = self.lock_verified().get(token)
            && unexpired(*exp, now)
        {
            return Ok(caller.clone());
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => {
                        unauthenticated("TOKEN_EXPIRED", "token expired")
                    }
                    _ => unauthenticated("TOKEN_INVALID", &format!("token rejected: {e}")),
                }
            })?;
        let tenant = Tenant::parse(&data.claims.tenant)
            .map_err(|e| unauthenticated("TOKEN_INVALID", &format!("tenant claim: {e}")))?;
        let caller = Caller {
            tenant,
            subject: data.claims.sub,
        };
        let mut verified = self.lock_verified();
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(token.to_owned(), (caller.clone(), data.claims.exp));
        Ok(caller)
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Caller, u64)>> {
        // A panic while holding it leaves a map that is still consistent.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unauthenticated(reason: &str, message: &str) -> Status {
    crate::status::with_reason(Code::Unauthenticated, DOMAIN, reason, message)
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let caller = self.authenticate(header)?;
        tracing::Span::current().record("tenant", caller.tenant.as_str());
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEV_JWT_SECRET, Secret};

    fn cfg(secret: &str) -> AuthConfig {
        AuthConfig {
            jwt_secret: Secret::new(secret),
            issuer: "oms".into(),
            audience: "oms".into(),
        }
    }

    #[test]
    fn minted_tokens_authenticate_with_their_tenant() {
        let c = cfg(DEV_JWT_SECRET);
        let t = TokenIssuer::new(&c).mint(
            &Tenant::parse("acme").unwrap(),
            "alice",
            Duration::from_secs(60),
        );
        let caller = Authenticator::new(&c)
            .authenticate(Some(&format!("Bearer {t}")))
            .unwrap();
        assert_eq!(caller.tenant.as_str(), "acme");
        assert_eq!(caller.subject, "alice");
    }

    #[test]
    fn bad_tokens_are_unauthenticated() {
        let c = cfg(DEV_JWT_SECRET);
        let other = cfg("another-secret-another-secret-another");
        let t = TokenIssuer::new(&other).mint(
            &Tenant::parse("acme").unwrap(),
            "eve",
            Duration::from_secs(60),
        );
        let auth = Authenticator::new(&c);
        for header in [
            None,
            Some("Basic abc".to_string()),
            Some(format!("Bearer {t}")),
            Some("Bearer x.y.z".into()),
        ] {
            let err = auth.authenticate(header.as_deref()).unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{header:?}");
        }
    }

    #[test]
    fn expired_tokens_say_so() {
        let c = cfg(DEV_JWT_SECRET);
        let key = EncodingKey::from_secret(DEV_JWT_SECRET.as_bytes());
        let claims = Claims {
            sub: "a".into(),
            tenant: "acme".into(),
            iss: "oms".into(),
            aud: "oms".into(),
            iat: 1,
            exp: 2,
        };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        let err = Authenticator::new(&c)
            .authenticate(Some(&format!("Bearer {t}")))
            .unwrap_err();
        use tonic_types::StatusExt;
        assert_eq!(
            err.get_error_details().error_info().unwrap().reason,
            "TOKEN_EXPIRED"
        );
    }

    #[test]
    fn a_remembered_token_answers_the_same_and_expires_by_the_same_rule() {
        let c = cfg(DEV_JWT_SECRET);
        let t = TokenIssuer::new(&c).mint(
            &Tenant::parse("acme").unwrap(),
            "alice",
            Duration::from_secs(60),
        );
        let auth = Authenticator::new(&c);
        let header = format!("Bearer {t}");
        let first = auth.authenticate(Some(&header)).unwrap();
        assert_eq!(auth.lock_verified().len(), 1);
        assert_eq!(auth.authenticate(Some(&header)).unwrap(), first);
        // The full check allows `exp` + leeway; so does the remembered one.
        assert!(unexpired(100, 100 + LEEWAY));
        assert!(!unexpired(100, 101 + LEEWAY));
        // Tokens that fail are never remembered.
        let _ = auth.authenticate(Some("Bearer x.y.z"));
        assert_eq!(auth.lock_verified().len(), 1);
    }
}
