//! OIDC access tokens: signature by a key from the issuer's JWKS, then
//! issuer, audience, expiry, not-before and the algorithm allow-list. Keys
//! are cached; a token signed by a key we do not know (the issuer rotated)
//! fetches the set again, at most once every few seconds.

use super::{Denied, Principal};
use crate::config::{JwtConfig, Permission};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// Keys are fetched again after this long even when every kid is known.
const KEYS_TTL: Duration = Duration::from_secs(3600);
/// An unknown kid fetches the set at most this often (a flood of made-up
/// kids must not become a flood on the issuer).
const REFETCH_MIN: Duration = Duration::from_secs(2);
const JWKS_MAX_BYTES: usize = 1 << 20;

pub struct Jwt {
    config: JwtConfig,
    validation: Validation,
    client: reqwest::Client,
    keys: RwLock<Keys>,
    fetching: Mutex<()>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    /// Keys without a kid, tried in turn for tokens without one.
    unnamed: Vec<DecodingKey>,
    /// The last successful fetch.
    fetched: Option<Instant>,
    /// The last attempt, successful or not: attempts are spaced.
    attempted: Option<Instant>,
}

impl Keys {
    fn find(&self, kid: &str) -> Vec<&DecodingKey> {
        if kid.is_empty() {
            self.unnamed.iter().chain(self.by_kid.values()).collect()
        } else {
            self.by_kid.get(kid).into_iter().collect()
        }
    }
}

impl Jwt {
    pub fn new(config: JwtConfig) -> anyhow::Result<Jwt> {
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| Algorithm::from_str(a).map_err(|_| anyhow::anyhow!("unknown algorithm {a}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway_secs;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Jwt {
            config,
            validation,
            client,
            keys: RwLock::new(Keys::default()),
            fetching: Mutex::new(()),
        })
    }

    pub async fn check(&self, token: &str) -> Result<Principal, Denied> {
        let bad = |why: String| Denied::Unauthenticated(why);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| bad(format!("the token is not a JWT ({e})")))?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(bad(format!(
                "the token is signed with {:?}, which is not allowed here",
                header.alg
            )));
        }
        // Only the token's own algorithm: jsonwebtoken refuses a key whose
        // family differs from any listed one, and a key must match its token.
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let kid = header.kid.unwrap_or_default();
        let stale = {
            let keys = self.keys.read().await;
            let found = keys.find(&kid);
            let fresh = keys.fetched.is_some_and(|t| t.elapsed() < KEYS_TTL);
            if fresh && !found.is_empty() {
                return self.verify(token, &found, &validation);
            }
            !found.is_empty()
        };
        // Unknown kid, or keys due for renewal: fetch the set again. If the
        // issuer cannot be reached, keys we already hold still serve.
        let fetched = self.refetch().await;
        let keys = self.keys.read().await;
        let found = keys.find(&kid);
        if !found.is_empty() {
            return self.verify(token, &found, &validation);
        }
        match fetched {
            Err(e) if !stale && keys.fetched.is_none() => Err(e),
            _ => Err(bad(format!(
                "the token's key (kid {kid:?}) is not in the issuer's key set"
            ))),
        }
    }

    fn verify(
        &self,
        token: &str,
        keys: &[&DecodingKey],
        validation: &Validation,
    ) -> Result<Principal, Denied> {
        let mut last = None;
        for key in keys {
            match jsonwebtoken::decode::<serde_json::Value>(token, key, validation) {
                Ok(data) => return Ok(self.principal(&data.claims)),
                Err(e) => last = Some(e),
            }
        }
        use jsonwebtoken::errors::ErrorKind as K;
        let why = match last.as_ref().map(|e| e.kind()) {
            Some(K::ExpiredSignature) => "the token has expired".into(),
            Some(K::ImmatureSignature) => "the token is not valid yet (nbf)".into(),
            Some(K::InvalidAudience) => "the token is for another audience".into(),
            Some(K::InvalidIssuer) => "the token is from another issuer".into(),
            Some(K::InvalidSignature) => "the token's signature does not verify".into(),
            Some(K::MissingRequiredClaim(c)) => format!("the token has no {c} claim"),
            Some(other) => format!("the token is not valid ({other:?})"),
            None => "the token is not valid".into(),
        };
        Err(Denied::Unauthenticated(why))
    }

    fn principal(&self, claims: &serde_json::Value) -> Principal {
        let values: BTreeSet<&str> = match claims.get(&self.config.permissions_claim) {
            Some(serde_json::Value::String(s)) => s.split_whitespace().collect(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => BTreeSet::new(),
        };
        let permissions = Permission::ALL
            .into_iter()
            .filter(|p| match self.config.permissions.get(p) {
                Some(granting) => granting.iter().any(|g| values.contains(g.as_str())),
                None => values.contains(p.name()),
            })
            .collect();
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .or_else(|| claims.get("client_id").and_then(|s| s.as_str()))
            .unwrap_or("unnamed token")
            .to_owned();
        Principal {
            subject,
            permissions,
        }
    }

    /// Fetch the key set again unless another request just tried.
    async fn refetch(&self) -> Result<(), Denied> {
        let _one = self.fetching.lock().await;
        {
            let mut keys = self.keys.write().await;
            if keys.attempted.is_some_and(|t| t.elapsed() < REFETCH_MIN) {
                return Ok(());
            }
            keys.attempted = Some(Instant::now());
        }
        let unavailable = |e: String| {
            tracing::warn!(url = %self.config.jwks_url, error = %e, "cannot fetch the token issuer's keys");
            Denied::Unavailable(format!(
                "cannot fetch the token issuer's keys from {}: {e}",
                self.config.jwks_url
            ))
        };
        let rsp = self
            .client
            .get(&self.config.jwks_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        let body = crate::web::client::read_limited(rsp, JWKS_MAX_BYTES)
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("not a JWK set ({e})")))?;
        let mut keys = Keys {
            fetched: Some(Instant::now()),
            attempted: Some(Instant::now()),
            ..Keys::default()
        };
        for jwk in &set.keys {
            // Encryption keys never verify a signature.
            if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), key);
                }
                None => keys.unnamed.push(key),
            }
        }
        tracing::info!(keys = set.keys.len(), url = %self.config.jwks_url, "token issuer's keys fetched");
        *self.keys.write().await = keys;
        Ok(())
    }
}
