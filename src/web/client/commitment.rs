//! Storage commitment over DICOMweb (PS3.18 ch. 13): `POST` and `GET
//! {url}/commitment-requests/{transactionUID}`. The bodies are DICOM JSON;
//! what they mean is for the caller (translate::commitment::json).

use super::{read_limited, refusal, retry_after, UpstreamClient, UpstreamError};
use super::{DICOM_JSON, MAX_RESPONSE_BODY};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use std::time::Duration;

/// What the origin said about a commitment request.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitmentAnswer {
    /// 200: the result body.
    Done(serde_json::Value),
    /// 202: still working; ask again (after Retry-After, when given).
    Working { retry_after: Option<Duration> },
    /// 404 to GET (no such request), or to POST (no /commitment-requests at
    /// all, as with Orthanc 1.10); 405 and 501 count as the latter too.
    NotFound,
    /// 409 to POST: the Transaction UID is taken (by us, when we ask again
    /// after a restart).
    Conflict,
    /// 410 to GET: the result has been deleted.
    Gone,
}

impl UpstreamClient {
    /// POST the request body.
    pub async fn commitment_request(
        &self,
        transaction_uid: &str,
        body: &serde_json::Value,
    ) -> Result<CommitmentAnswer, UpstreamError> {
        let url = self.commitment_url(transaction_uid);
        let req = self
            .request(reqwest::Method::POST, &url)
            .header(CONTENT_TYPE, DICOM_JSON)
            .body(body.to_string());
        self.commitment_answer(&url, req).await
    }

    /// GET the result (or the news that it is not there yet).
    pub async fn commitment_result(
        &self,
        transaction_uid: &str,
    ) -> Result<CommitmentAnswer, UpstreamError> {
        let url = self.commitment_url(transaction_uid);
        let req = self.request(reqwest::Method::GET, &url);
        self.commitment_answer(&url, req).await
    }

    fn commitment_url(&self, transaction_uid: &str) -> String {
        format!("{}/commitment-requests/{transaction_uid}", self.base)
    }

    async fn commitment_answer(
        &self,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<CommitmentAnswer, UpstreamError> {
        let (resp, _turn) = self
            .send(req.header(ACCEPT, DICOM_JSON), url, self.request_timeout)
            .await?;
        let answer = match resp.status() {
            StatusCode::OK => {
                let body = read_limited(resp, MAX_RESPONSE_BODY + 1)
                    .await
                    .map_err(|e| self.transport_error(url, e, self.request_timeout))?;
                if body.len() > MAX_RESPONSE_BODY {
                    return Err(bad(url, "commitment result larger than 16 MiB".into()));
                }
                let value = serde_json::from_slice(&body)
                    .map_err(|e| bad(url, format!("commitment result is not JSON: {e}")))?;
                CommitmentAnswer::Done(value)
            }
            StatusCode::ACCEPTED => CommitmentAnswer::Working {
                retry_after: retry_after(&resp),
            },
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => CommitmentAnswer::NotFound,
            StatusCode::CONFLICT => CommitmentAnswer::Conflict,
            StatusCode::GONE => CommitmentAnswer::Gone,
            _ => return Err(refusal(url, resp).await),
        };
        tracing::debug!(?answer, "commitment request answered");
        Ok(answer)
    }
}

fn bad(url: &str, message: String) -> UpstreamError {
    UpstreamError::BadResponse {
        url: url.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::client::tests::{canned, config, http_response};
    use serde_json::json;

    async fn answer_to(status: &str, headers: &str, body: &str, post: bool) -> CommitmentAnswer {
        let (url, server) = canned(http_response(status, headers, body)).await;
        let client = UpstreamClient::new(&config(&url, "")).unwrap();
        let got = if post {
            client
                .commitment_request("1.2.3", &json!({"00081199": {"vr": "SQ"}}))
                .await
        } else {
            client.commitment_result("1.2.3").await
        };
        let req = String::from_utf8(server.await.unwrap()).unwrap();
        let method = if post { "POST" } else { "GET" };
        assert!(
            req.starts_with(&format!(
                "{method} /dicom-web/commitment-requests/1.2.3 HTTP/1.1"
            )),
            "{req}"
        );
        assert!(req
            .to_lowercase()
            .contains("accept: application/dicom+json"));
        if post {
            assert!(
                req.contains("content-type: application/dicom+json"),
                "{req}"
            );
            assert!(req.ends_with(r#"{"00081199":{"vr":"SQ"}}"#), "{req}");
        }
        got.unwrap()
    }

    #[tokio::test]
    async fn answers_by_status() {
        let body = r#"{"00081199": {"vr": "SQ", "Value": []}}"#;
        assert_eq!(
            answer_to("200 OK", "", body, true).await,
            CommitmentAnswer::Done(serde_json::from_str(body).unwrap())
        );
        assert_eq!(
            answer_to("202 Accepted", "Retry-After: 7\r\n", "", true).await,
            CommitmentAnswer::Working {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            answer_to("202 Accepted", "", "", false).await,
            CommitmentAnswer::Working { retry_after: None }
        );
        assert_eq!(
            answer_to("404 Not Found", "", "", true).await,
            CommitmentAnswer::NotFound
        );
        assert_eq!(
            answer_to("405 Method Not Allowed", "", "", true).await,
            CommitmentAnswer::NotFound
        );
        assert_eq!(
            answer_to("409 Conflict", "", "", true).await,
            CommitmentAnswer::Conflict
        );
        assert_eq!(
            answer_to("410 Gone", "", "", false).await,
            CommitmentAnswer::Gone
        );
    }

    #[tokio::test]
    async fn errors_keep_status_and_retry_after() {
        let (url, server) = canned(http_response(
            "503 Service Unavailable",
            "Retry-After: 30\r\n",
            "busy",
        ))
        .await;
        let client = UpstreamClient::new(&config(&url, "")).unwrap();
        let err = client.commitment_result("1.2.3").await.unwrap_err();
        server.await.unwrap();
        assert!(err.is_transient());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));

        let (url, server) = canned(http_response("200 OK", "", "<html>")).await;
        let client = UpstreamClient::new(&config(&url, "")).unwrap();
        let err = client.commitment_result("1.2.3").await.unwrap_err();
        server.await.unwrap();
        assert!(matches!(err, UpstreamError::BadResponse { .. }), "{err:?}");
    }
}
