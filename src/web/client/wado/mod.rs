//! WADO-RS retrieve of PS3.10 instances as multipart/related, streamed part
//! by part and chunk by chunk: memory stays bounded whatever the size of
//! the study.

use super::DICOM;
use super::{UpstreamClient, UpstreamError};
use crate::dicom::part10::{parse_part10_header, FileMetaInfo, Part10Head};
use crate::web::multipart::{related_boundary, YieldEvery, POLL_BUDGET};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use std::time::Duration;
use tokio::io::AsyncRead;

/// A file meta group is a few hundred bytes; more than this is not one.
const MAX_PART10_HEAD: usize = 1024 * 1024;

/// The parts of a WADO-RS answer, read one after the other.
pub struct RetrievedParts {
    url: String,
    /// None for an answer without content (204).
    multipart: Option<multer::Multipart<'static>>,
    idle: Duration,
    parts: usize,
    /// Our turn among the origin's connections, until the answer is read.
    _turn: super::Turn,
}

/// One part: a PS3.10 file, as a stream of chunks. Consume or drop it
/// before asking for the next part.
pub struct Part {
    field: multer::Field<'static>,
    content_type: Option<String>,
    /// Data set bytes read ahead by [`Part::file_meta`].
    pending: Option<Bytes>,
    started: bool,
    done: bool,
    url: String,
    idle: Duration,
}

impl UpstreamClient {
    /// GET `{url}/{path}` (`studies/{s}`, `studies/{s}/series/{se}`,
    /// `studies/{s}/series/{se}/instances/{i}`) as
    /// `multipart/related; type="application/dicom"; transfer-syntax=..`.
    ///
    /// `transfer_syntax`: a UID, or `*` for "as stored"; None also asks for
    /// `*` (without it, PS3.18 makes the origin transcode to Explicit VR
    /// Little Endian, which Orthanc 1.10 does, decompressing on the way).
    ///
    /// There is no whole-request timeout here, only the idle timeout:
    /// a large study rightly takes long.
    pub async fn retrieve(
        &self,
        path: &str,
        transfer_syntax: Option<&str>,
    ) -> Result<RetrievedParts, UpstreamError> {
        let url = format!("{}/{}", self.base, path.trim_start_matches('/'));
        let ts = transfer_syntax.unwrap_or("*");
        let valid_ts = ts == "*"
            || (!ts.is_empty()
                && ts.len() <= 64
                && ts.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
        if !valid_ts {
            return Err(UpstreamError::Config(format!(
                "not a transfer syntax UID: {ts:?}"
            )));
        }
        let accept = format!("multipart/related; type=\"{DICOM}\"; transfer-syntax={ts}");
        let req = self
            .request_untimed(reqwest::Method::GET, &url)
            .header(ACCEPT, accept);
        let (resp, turn) = self.get_ok(req, &url, self.request_timeout).await?;
        let status = resp.status();
        tracing::debug!(status = status.as_u16(), "WADO-RS answered");
        if status == StatusCode::NO_CONTENT {
            return Ok(RetrievedParts {
                url,
                multipart: None,
                idle: self.request_timeout,
                parts: 0,
                _turn: turn,
            });
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let Some(boundary) = related_boundary(&content_type) else {
            return Err(UpstreamError::BadResponse {
                url,
                message: format!(
                    "expected multipart/related with a boundary, got Content-Type {content_type:?}"
                ),
            });
        };
        let body = YieldEvery::new(Box::pin(resp.bytes_stream()), POLL_BUDGET);
        Ok(RetrievedParts {
            url,
            multipart: Some(multer::Multipart::new(body, boundary)),
            idle: self.request_timeout,
            parts: 0,
            _turn: turn,
        })
    }
}

impl std::fmt::Debug for RetrievedParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrievedParts")
            .field("url", &self.url)
            .field("parts", &self.parts)
            .field("finished", &self.multipart.is_none())
            .finish()
    }
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("content_type", &self.content_type)
            .field("done", &self.done)
            .finish()
    }
}

impl RetrievedParts {
    /// The next part, or None after the last. The previous part must have
    /// been consumed or dropped.
    pub async fn next_part(&mut self) -> Result<Option<Part>, UpstreamError> {
        let Some(multipart) = self.multipart.as_mut() else {
            return Ok(None);
        };
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => {
                tracing::debug!(parts = self.parts, "WADO-RS answer complete");
                self.multipart = None;
                return Ok(None);
            }
            Err(e) => return Err(multer_error(&self.url, self.idle, e)),
        };
        self.parts += 1;
        let content_type = field
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Some(Part {
            field,
            content_type,
            pending: None,
            started: false,
            done: false,
            url: self.url.clone(),
            idle: self.idle,
        }))
    }

    /// The request URL (for messages; it holds UIDs, not patient names).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Part {
    /// The part's Content-Type as sent, parameters included
    /// (e.g. `application/dicom; transfer-syntax=1.2.840.10008.1.2.1`).
    pub fn content_type(&self) -> Option<String> {
        self.content_type.clone()
    }

    /// The `transfer-syntax` parameter of the part's Content-Type, if any
    /// (Orthanc 1.10 sends none: read the file meta group instead).
    pub fn transfer_syntax(&self) -> Option<String> {
        let mime: mime::Mime = self.content_type.as_deref()?.parse().ok()?;
        mime.get_param("transfer-syntax")
            .map(|v| v.as_str().to_owned())
    }

    /// The next chunk of the part's bytes, or None at its end. After
    /// [`Part::file_meta`], the data set bytes only.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        self.started = true;
        if let Some(b) = self.pending.take() {
            return Ok(Some(b));
        }
        if self.done {
            return Ok(None);
        }
        loop {
            match self.field.chunk().await {
                Ok(Some(b)) if b.is_empty() => continue,
                Ok(Some(b)) => return Ok(Some(b)),
                Ok(None) => {
                    self.done = true;
                    return Ok(None);
                }
                Err(e) => {
                    self.done = true;
                    return Err(multer_error(&self.url, self.idle, e));
                }
            }
        }
    }

    /// Reads the part's PS3.10 preamble and file meta group and returns its
    /// UIDs; what follows ([`Part::chunk`], [`Part::into_async_read`]) is
    /// then the data set alone, ready for a C-STORE. Call before reading
    /// anything else of the part.
    pub async fn file_meta(&mut self) -> Result<FileMetaInfo, UpstreamError> {
        debug_assert!(!self.started, "file_meta after the part was read");
        let mut head = BytesMut::new();
        loop {
            match parse_part10_header(&head) {
                Part10Head::Complete(at, meta) => {
                    let rest = head.split_off(at).freeze();
                    if !rest.is_empty() {
                        self.pending = Some(rest);
                    }
                    return Ok(meta);
                }
                Part10Head::Invalid(why) => return Err(self.bad(format!("part: {why}"))),
                Part10Head::NeedMore if head.len() > MAX_PART10_HEAD => {
                    return Err(self.bad(format!(
                        "part's file meta group is longer than {MAX_PART10_HEAD} bytes"
                    )))
                }
                Part10Head::NeedMore => {}
            }
            match self.chunk().await? {
                Some(b) => head.extend_from_slice(&b),
                None => return Err(self.bad("part ended within its PS3.10 header".into())),
            }
        }
    }

    fn bad(&self, message: String) -> UpstreamError {
        UpstreamError::BadResponse {
            url: self.url.clone(),
            message,
        }
    }

    /// The remaining bytes as a stream; it ends after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static {
        futures::stream::unfold(Some(self), |part| async move {
            let mut part = part?;
            match part.chunk().await {
                Ok(Some(b)) => Some((Ok(b), Some(part))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// The remaining bytes as an AsyncRead (errors come as
    /// `io::Error::other(UpstreamError)`).
    pub fn into_async_read(self) -> impl AsyncRead + Send + Unpin + 'static {
        tokio_util::io::StreamReader::new(Box::pin(
            self.into_stream().map(|r| r.map_err(std::io::Error::other)),
        ))
    }
}

fn multer_error(url: &str, idle: Duration, e: multer::Error) -> UpstreamError {
    if let multer::Error::StreamReadFailed(source) = &e {
        if let Some(re) = source.downcast_ref::<reqwest::Error>() {
            return if re.is_timeout() {
                UpstreamError::Timeout {
                    url: url.to_owned(),
                    secs: idle.as_secs(),
                }
            } else {
                UpstreamError::Connect {
                    url: url.to_owned(),
                    message: super::error_chain(re),
                }
            };
        }
    }
    UpstreamError::BadResponse {
        url: url.to_owned(),
        message: format!("multipart body: {e}"),
    }
}

#[cfg(test)]
mod tests;
