//! `[web.auth]`: who may use the DICOMweb face, and for what.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// What a request may do; each route needs one.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// QIDO-RS, WADO-RS, WADO-URI, rendered, frames, metadata.
    Read,
    /// STOW-RS.
    Write,
    /// `/commitment-requests`.
    Commit,
    /// `/jobs`.
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Write,
        Permission::Commit,
        Permission::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Commit => "commit",
            Permission::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum WebAuth {
    /// Anyone who reaches the port may do anything: only on loopback, or
    /// behind a proxy that authenticates (`allow_anonymous = true`).
    None {
        #[serde(default)]
        allow_anonymous: bool,
    },
    /// `Authorization: Bearer <token>`, tokens stored as SHA-256 hashes.
    Bearer { tokens: Vec<TokenEntry> },
    /// `Authorization: Basic`, passwords stored as argon2 or bcrypt hashes.
    Basic { users: Vec<UserEntry> },
    /// OIDC access tokens (JWT) checked against the issuer's JWKS.
    Jwt(JwtConfig),
}

impl Default for WebAuth {
    fn default() -> Self {
        WebAuth::None {
            allow_anonymous: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds the token, for the audit log.
    pub name: String,
    /// Hex SHA-256 of the token (`pons hash-secret --sha256`).
    pub sha256: String,
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub username: String,
    /// `$argon2id$…` or `$2b$…` (`pons hash-secret`).
    pub password_hash: String,
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// Signature algorithms accepted; anything else (and `none`) is refused.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The claim holding scopes or roles: a space-separated string or an array.
    #[serde(default = "default_claim")]
    pub permissions_claim: String,
    /// Which claim values grant which permission; a permission left out is
    /// granted by a value equal to its own name.
    #[serde(default)]
    pub permissions: BTreeMap<Permission, Vec<String>>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_claim() -> String {
    "scope".into()
}
fn default_leeway() -> u64 {
    30
}

pub const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl WebAuth {
    pub fn validate(&self, listen: SocketAddr, tls: bool, p: &mut Vec<String>) {
        match self {
            WebAuth::None { allow_anonymous } => {
                if !listen.ip().is_loopback() && !allow_anonymous {
                    p.push(format!(
                        "web.listen {listen} is reachable beyond this host but [web.auth] is none: \
                         set kind = \"bearer\", \"basic\" or \"jwt\", or allow_anonymous = true \
                         if a proxy in front of Pons authenticates"
                    ));
                }
            }
            WebAuth::Bearer { tokens } => {
                if tokens.is_empty() {
                    p.push("web.auth.tokens is empty: nobody could use the web face".into());
                }
                for (i, t) in tokens.iter().enumerate() {
                    let hex =
                        t.sha256.len() == 64 && t.sha256.chars().all(|c| c.is_ascii_hexdigit());
                    if !hex {
                        p.push(format!(
                            "web.auth.tokens[{i}].sha256 must be 64 hex digits (pons hash-secret --sha256)"
                        ));
                    }
                }
            }
            WebAuth::Basic { users } => {
                if users.is_empty() {
                    p.push("web.auth.users is empty: nobody could use the web face".into());
                }
                if !tls && !listen.ip().is_loopback() {
                    p.push(format!(
                        "web.auth basic sends passwords in the clear: web.listen {listen} needs [web.tls]"
                    ));
                }
                for (i, u) in users.iter().enumerate() {
                    let h = &u.password_hash;
                    if !(h.starts_with("$argon2") || h.starts_with("$2")) {
                        p.push(format!(
                            "web.auth.users[{i}].password_hash must be an argon2 ($argon2id$…) or bcrypt ($2b$…) hash (pons hash-secret)"
                        ));
                    }
                }
            }
            WebAuth::Jwt(j) => {
                if !secure_or_loopback(&j.jwks_url) {
                    p.push(format!(
                        "web.auth.jwks_url {:?} must be https:// (or http:// on this host): whoever can change the keys can forge tokens",
                        j.jwks_url
                    ));
                }
                if j.algorithms.is_empty() {
                    p.push("web.auth.algorithms is empty".into());
                }
                for a in &j.algorithms {
                    if !ALGORITHMS.contains(&a.as_str()) {
                        p.push(format!(
                            "web.auth.algorithms: {a:?} is not one of {}",
                            ALGORITHMS.join(", ")
                        ));
                    }
                }
                if j.issuer.is_empty() || j.audience.is_empty() {
                    p.push("web.auth.issuer and web.auth.audience must be set".into());
                }
            }
        }
    }
}

/// `https://`, or `http://` to this host: a URL that may carry secrets or
/// keys.
pub fn secure_or_loopback(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return url.starts_with("https://");
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
