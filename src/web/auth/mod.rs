//! `[web.auth]`: every request but the probes shows who it is (a bearer
//! token, a password or an OIDC access token) and needs the permission its
//! route asks for. 401 with `WWW-Authenticate` when it cannot say who it is,
//! 403 when it may not.

mod basic;
mod jwt;

use crate::config::{Permission, WebAuth};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tracing::{info, warn};

/// Who made a request, for the audit log; an extension on every request
/// that passed.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub permissions: BTreeSet<Permission>,
}

pub enum Authenticator {
    Anonymous,
    Bearer(HashMap<[u8; 32], Principal>),
    Basic(basic::Basic),
    Jwt(Box<jwt::Jwt>),
}

/// Why a request was not let in.
pub enum Denied {
    /// No credentials, or ones we do not know: 401.
    Unauthenticated(String),
    /// We could not check (the JWKS is unreachable): 503.
    Unavailable(String),
}

impl Authenticator {
    pub fn new(config: &WebAuth) -> anyhow::Result<Authenticator> {
        Ok(match config {
            WebAuth::None { .. } => Authenticator::Anonymous,
            WebAuth::Bearer { tokens } => Authenticator::Bearer(
                tokens
                    .iter()
                    .map(|t| {
                        let mut hash = [0u8; 32];
                        for (i, byte) in hash.iter_mut().enumerate() {
                            *byte = u8::from_str_radix(&t.sha256[2 * i..2 * i + 2], 16)?;
                        }
                        let who = Principal {
                            subject: t.name.clone(),
                            permissions: t.permissions.iter().copied().collect(),
                        };
                        Ok((hash, who))
                    })
                    .collect::<anyhow::Result<_>>()?,
            ),
            WebAuth::Basic { users } => Authenticator::Basic(basic::Basic::new(users)),
            WebAuth::Jwt(cfg) => Authenticator::Jwt(Box::new(jwt::Jwt::new(cfg.clone())?)),
        })
    }

    fn scheme(&self) -> &'static str {
        match self {
            Authenticator::Basic(_) => "Basic",
            _ => "Bearer",
        }
    }

    async fn identify(&self, authorization: Option<&str>) -> Result<Principal, Denied> {
        let missing = || Denied::Unauthenticated("this request needs credentials".into());
        match self {
            Authenticator::Anonymous => Ok(Principal {
                subject: "anonymous".into(),
                permissions: Permission::ALL.into_iter().collect(),
            }),
            Authenticator::Bearer(tokens) => {
                let token = bearer(authorization).ok_or_else(missing)?;
                let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                tokens
                    .get(&hash)
                    .cloned()
                    .ok_or_else(|| Denied::Unauthenticated("the token is not known here".into()))
            }
            Authenticator::Basic(b) => {
                let value = authorization
                    .and_then(|v| strip_scheme(v, "Basic"))
                    .ok_or_else(missing)?;
                b.check(value).await
            }
            Authenticator::Jwt(j) => j.check(bearer(authorization).ok_or_else(missing)?).await,
        }
    }
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|v| strip_scheme(v, "Bearer"))
        .filter(|t| !t.is_empty())
}

/// The permission a request needs, by the route it matched (`route`, e.g.
/// `/dicom-web/commitment-requests/{uid}`; the path itself when none did);
/// `None` for the probes, which load balancers call without credentials.
pub fn required(method: &Method, path: &str, route: Option<&str>) -> Option<Permission> {
    if path == "/healthz" || path == "/readyz" {
        return None;
    }
    let route = route.unwrap_or(path);
    Some(
        if route == "/jobs" || route.starts_with("/jobs/") || route == "/metrics" {
            Permission::Admin
        } else if route.ends_with("/commitment-requests/{uid}") {
            Permission::Commit
        } else if method == Method::GET || method == Method::HEAD {
            Permission::Read
        } else {
            Permission::Write
        },
    )
}

/// The middleware: let the request in with its [`Principal`], or answer.
pub async fn check(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let Some(needed) = required(req.method(), req.uri().path(), route.as_deref()) else {
        return next.run(req).await;
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let who = match auth.identify(authorization).await {
        Ok(who) => who,
        Err(Denied::Unavailable(why)) => {
            failure("unavailable");
            warn!(reason = %why, "cannot check credentials");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "10")],
                format!("{why}\n"),
            )
                .into_response();
        }
        Err(Denied::Unauthenticated(why)) => {
            failure("unauthenticated");
            info!(reason = %why, "request refused: not authenticated");
            let challenge = match auth.scheme() {
                "Basic" => r#"Basic realm="pons", charset="UTF-8""#.to_owned(),
                _ if authorization.is_none() => r#"Bearer realm="pons""#.to_owned(),
                _ => format!(
                    r#"Bearer realm="pons", error="invalid_token", error_description="{}""#,
                    why.replace('"', "'")
                ),
            };
            let mut rsp = (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                rsp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return rsp;
        }
    };
    if !who.permissions.contains(&needed) {
        failure("forbidden");
        info!(subject = %who.subject, permission = needed.name(), "request refused: not permitted");
        let mut rsp = (
            StatusCode::FORBIDDEN,
            format!(
                "{} may not do this: it needs the '{}' permission\n",
                who.subject,
                needed.name()
            ),
        )
            .into_response();
        if auth.scheme() == "Bearer" {
            let challenge = format!(
                r#"Bearer realm="pons", error="insufficient_scope", scope="{}""#,
                needed.name()
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                rsp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        rsp.extensions_mut().insert(who);
        return rsp;
    }
    req.extensions_mut().insert(who.clone());
    let mut rsp = next.run(req).await;
    // For the audit log, outside this layer.
    rsp.extensions_mut().insert(who);
    rsp
}

fn failure(reason: &'static str) {
    crate::metrics::get()
        .auth_failures
        .get_or_create(&crate::metrics::Reason { reason })
        .inc();
}

/// `pons hash-secret`: what goes into `sha256` (bearer) or `password_hash` (basic).
pub fn hash_secret(secret: &str, sha256: bool) -> anyhow::Result<String> {
    if sha256 {
        return Ok(hex(&Sha256::digest(secret.as_bytes())));
    }
    basic::hash_password(secret)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
