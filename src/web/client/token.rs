//! Access tokens for the origin that expire: OAuth2 client credentials
//! (the `oauth2` crate) and Google service accounts (`gcp_auth`, the
//! JWT-bearer grant). A token is reused until shortly before it expires; a
//! 401 from the origin drops it so that the next request fetches another.
//! Errors name the token endpoint, never the secret.

use super::UpstreamError;
use crate::config::AuthConfig;
use gcp_auth::TokenProvider;
use oauth2::basic::BasicClient;
use oauth2::{AuthUrl, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

const GOOGLE_SCOPE: &str = "https://www.googleapis.com/auth/cloud-healthcare";
/// A token without `expires_in` is used this long (or until a 401).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// A failed fetch is not tried again for this long.
const FAILURE_HOLD: Duration = Duration::from_secs(5);

enum Grant {
    ClientCredentials {
        client_id: String,
        secret: String,
        token_url: String,
        scope: Option<String>,
        audience: Option<String>,
        /// No redirects: a token endpoint that redirects is misconfigured,
        /// and following one could hand the secret elsewhere.
        http: oauth2::reqwest::Client,
    },
    Google(Box<gcp_auth::CustomServiceAccount>),
}

pub struct Tokens {
    grant: Grant,
    /// The endpoint, for messages.
    endpoint: String,
    current: Mutex<Option<(String, Instant)>>,
    /// The last failure, answered again for a few seconds: a token endpoint
    /// that hangs or refuses must not be asked once per queued request.
    failed: Mutex<Option<(String, Instant)>>,
}

impl Tokens {
    pub fn new(auth: &AuthConfig) -> Result<Option<Tokens>, UpstreamError> {
        let config_error = |what: String| UpstreamError::Config(what);
        Ok(Some(match auth {
            AuthConfig::Oauth2 {
                token_url,
                client_id,
                client_secret_file,
                scope,
                audience,
            } => {
                let secret = std::fs::read_to_string(client_secret_file)
                    .map_err(|e| {
                        config_error(format!(
                            "cannot read client_secret_file {}: {e}",
                            client_secret_file.display()
                        ))
                    })?
                    .trim()
                    .to_owned();
                let http = oauth2::reqwest::Client::builder()
                    .redirect(oauth2::reqwest::redirect::Policy::none())
                    .timeout(Duration::from_secs(30))
                    .build()
                    .map_err(|e| config_error(format!("HTTP client: {e}")))?;
                Tokens {
                    endpoint: token_url.clone(),
                    grant: Grant::ClientCredentials {
                        client_id: client_id.clone(),
                        secret,
                        token_url: token_url.clone(),
                        scope: scope.clone(),
                        audience: audience.clone(),
                        http,
                    },
                    current: Mutex::new(None),
                    failed: Mutex::new(None),
                }
            }
            AuthConfig::Google {
                service_account_file,
            } => {
                let account = gcp_auth::CustomServiceAccount::from_file(service_account_file)
                    .map_err(|e| {
                        config_error(format!(
                            "service_account_file {}: {e}",
                            service_account_file.display()
                        ))
                    })?;
                Tokens {
                    endpoint: format!(
                        "the token endpoint of service account file {}",
                        service_account_file.display()
                    ),
                    grant: Grant::Google(Box::new(account)),
                    current: Mutex::new(None),
                    failed: Mutex::new(None),
                }
            }
            _ => return Ok(None),
        }))
    }

    /// A token valid for a while yet.
    pub async fn get(&self) -> Result<String, UpstreamError> {
        let mut current = self.current.lock().await;
        if let Some((token, refresh_at)) = current.as_ref() {
            if Instant::now() < *refresh_at {
                return Ok(token.clone());
            }
        }
        let error = |message: String| UpstreamError::Token {
            endpoint: self.endpoint.clone(),
            message,
        };
        if let Some((message, at)) = self.failed.lock().await.as_ref() {
            if at.elapsed() < FAILURE_HOLD {
                return Err(error(message.clone()));
            }
        }
        let (token, lifetime) = match self.fetch().await {
            Ok(t) => t,
            Err(message) => {
                tracing::warn!(endpoint = %self.endpoint, error = %message, "cannot get an access token for the upstream");
                *self.failed.lock().await = Some((message.clone(), Instant::now()));
                return Err(error(message));
            }
        };
        *self.failed.lock().await = None;
        // Renew a minute early (a quarter early for short-lived tokens).
        let margin = (lifetime / 4).min(Duration::from_secs(60));
        *current = Some((token.clone(), Instant::now() + lifetime - margin));
        tracing::debug!(
            lifetime_secs = lifetime.as_secs(),
            "upstream access token fetched"
        );
        Ok(token)
    }

    /// The origin refused `used`: fetch a new one next time.
    pub async fn invalidate(&self, used: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(t, _)| t == used) {
            *current = None;
        }
    }

    async fn fetch(&self) -> Result<(String, Duration), String> {
        match &self.grant {
            Grant::ClientCredentials {
                client_id,
                secret,
                token_url,
                scope,
                audience,
                http,
            } => {
                let client = BasicClient::new(ClientId::new(client_id.clone()))
                    .set_client_secret(ClientSecret::new(secret.clone()))
                    // Unused by this grant; the crate's types want one.
                    .set_auth_uri(AuthUrl::new(token_url.clone()).map_err(|e| e.to_string())?)
                    .set_token_uri(TokenUrl::new(token_url.clone()).map_err(|e| e.to_string())?);
                let mut request = client.exchange_client_credentials();
                for s in scope.iter().flat_map(|s| s.split_whitespace()) {
                    request = request.add_scope(Scope::new(s.to_owned()));
                }
                if let Some(aud) = audience {
                    request = request.add_extra_param("audience", aud.clone());
                }
                let token = request.request_async(http).await.map_err(describe)?;
                let lifetime = token
                    .expires_in()
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_LIFETIME);
                Ok((token.access_token().secret().clone(), lifetime))
            }
            Grant::Google(account) => {
                let token = account
                    .token(&[GOOGLE_SCOPE])
                    .await
                    .map_err(|e| crate::dimse::client::error_chain(&e))?;
                let left = (token.expires_at() - chrono::Utc::now())
                    .to_std()
                    .unwrap_or_default();
                Ok((token.as_str().to_owned(), left.max(Duration::from_secs(1))))
            }
        }
    }
}

/// What the token endpoint said, without echoing what we sent.
fn describe<RE: std::error::Error + 'static>(
    e: oauth2::RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => {
            let mut text = r.error().to_string();
            if let Some(d) = r.error_description() {
                text = format!("{text}: {d}");
            }
            format!("the token endpoint refused: {text}")
        }
        oauth2::RequestTokenError::Request(e) => {
            format!(
                "cannot reach the token endpoint: {}",
                crate::dimse::client::error_chain(&e)
            )
        }
        oauth2::RequestTokenError::Parse(e, _) => {
            format!("the token endpoint's answer is not a token: {e}")
        }
        oauth2::RequestTokenError::Other(e) => e,
    }
}
