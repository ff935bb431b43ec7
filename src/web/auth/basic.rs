//! HTTP Basic against argon2 or bcrypt hashes. Checking a hash costs tens of
//! milliseconds by design, and a viewer sends hundreds of requests: a
//! password once verified is remembered (as a SHA-256 of user and password)
//! for a few minutes, and at most two checks run at once.

use super::{Denied, Principal};
use crate::config::UserEntry;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const REMEMBER: Duration = Duration::from_secs(300);
const REMEMBERED_MAX: usize = 4096;
/// A flood of wrong passwords makes others wait at most this long (then 503).
const CHECK_WAIT: Duration = Duration::from_secs(5);

pub struct Basic {
    users: HashMap<String, Arc<UserEntry>>,
    /// Checked for unknown users, so that they cost as much as known ones
    /// (no probing for usernames by timing).
    dummy: Arc<UserEntry>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    checking: Semaphore,
}

impl Basic {
    pub fn new(users: &[UserEntry]) -> Basic {
        Basic {
            users: users
                .iter()
                .map(|u| (u.username.clone(), Arc::new(u.clone())))
                .collect(),
            dummy: Arc::new(UserEntry {
                username: String::new(),
                password_hash: hash_password("pons-dummy").unwrap_or_default(),
                permissions: Vec::new(),
            }),
            verified: Mutex::new(HashMap::new()),
            checking: Semaphore::new(2),
        }
    }

    pub async fn check(&self, encoded: &str) -> Result<Principal, Denied> {
        let wrong = || Denied::Unauthenticated("wrong username or password".into());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Denied::Unauthenticated(
                    "the Basic credentials are not base64 of user:password".into(),
                )
            })?;
        let (name, password) = decoded.split_once(':').ok_or_else(wrong)?;
        let known = self.users.get(name);
        let user = known.unwrap_or(&self.dummy).clone();
        let principal = Principal {
            subject: user.username.clone(),
            permissions: user.permissions.iter().copied().collect(),
        };
        let key: [u8; 32] = Sha256::digest(decoded.as_bytes()).into();
        if self.remembered(&key) {
            return Ok(principal);
        }
        let busy = || Denied::Unavailable("too many password checks at once; try again".into());
        let _turn = tokio::time::timeout(CHECK_WAIT, self.checking.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify(&user.password_hash, &password))
            .await
            .unwrap_or(false);
        if !ok || known.is_none() {
            return Err(wrong());
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= REMEMBERED_MAX {
            verified.retain(|_, at| at.elapsed() < REMEMBER);
            if verified.len() >= REMEMBERED_MAX {
                verified.clear();
            }
        }
        verified.insert(key, Instant::now());
        Ok(principal)
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.get(key).is_some_and(|at| at.elapsed() < REMEMBER)
    }
}

fn verify(hash: &str, password: &str) -> bool {
    if hash.starts_with("$argon2") {
        PasswordHash::new(hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    // 16 bytes from the OS's generator (what a v4 UUID is made of).
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot make a salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash: {e}"))
}
