//! WADO-RS frames: `…/instances/{i}/frames/{1,3,5}` as multipart/related,
//! each frame as stored (native pixels as application/octet-stream,
//! compressed ones with their codec's media type) or decoded to
//! application/octet-stream when that is all the Accept header allows.
//! Frames are read and decoded one at a time, off the async threads.

use super::retrieve;
use super::{PacsService, WebError};
use crate::pixels::{PixelError, PixelFile};
use crate::web::multipart::{self, Part, PartBody};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use dicom_dictionary_std::uids;
use std::sync::Arc;

const OCTET_STREAM: &str = "application/octet-stream";

pub fn routes() -> Router<Arc<PacsService>> {
    Router::new().route(
        "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        get(frames),
    )
}

impl From<PixelError> for WebError {
    fn from(e: PixelError) -> WebError {
        match e {
            PixelError::NoPixelData | PixelError::NoSuchFrame { .. } => {
                WebError::NotFound(e.to_string())
            }
            PixelError::Unsupported(_) => WebError::NotAcceptable(e.to_string()),
            PixelError::Malformed(_) | PixelError::Io(_) => WebError::Internal(e.to_string()),
        }
    }
}

/// Runs CPU-heavy or file work on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PixelError> + Send + 'static,
) -> Result<T, WebError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WebError::Internal(format!("pixel task failed: {e}")))?
        .map_err(WebError::from)
}

/// `1,3,5` → [1, 3, 5]; 400 naming the bad item otherwise.
pub(super) fn parse_frame_list(list: &str) -> Result<Vec<u32>, WebError> {
    list.split(',')
        .map(|n| match n.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(WebError::BadRequest(format!(
                "frame list {list:?}: {n:?} is not a frame number (frames count from 1, \
                 separated by commas)"
            ))),
        })
        .collect()
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// One media range of an Accept header.
pub(super) struct MediaRange {
    /// Lower case, e.g. `multipart/related`, `image/jpeg`, `*/*`.
    pub media: String,
    /// The `type` parameter of multipart/related, lower case.
    pub part_type: Option<String>,
    pub transfer_syntax: Option<String>,
    pub text: String,
}

/// The Accept header's media ranges, best first (q, then order); ranges
/// with q=0 left out. Empty when there is no Accept header.
pub(super) fn media_ranges(headers: &HeaderMap) -> Vec<MediaRange> {
    let mut ranges: Vec<(f32, MediaRange)> = Vec::new();
    let values = headers.get_all(header::ACCEPT).iter();
    for range in values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| split_outside_quotes(v, ','))
    {
        let mut parts = split_outside_quotes(range, ';').into_iter();
        let mut r = MediaRange {
            media: parts.next().unwrap_or("").trim().to_ascii_lowercase(),
            part_type: None,
            transfer_syntax: None,
            text: range.trim().to_owned(),
        };
        let mut q = 1.0f32;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "type" => r.part_type = Some(v.to_ascii_lowercase()),
                "transfer-syntax" => r.transfer_syntax = Some(v.to_owned()),
                "q" => q = v.parse().unwrap_or(0.0),
                _ => {}
            }
        }
        if q > 0.0 {
            ranges.push((q, r));
        }
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranges.into_iter().map(|(_, r)| r).collect()
}

/// How the frames of one instance go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// As stored, labelled with this media type.
    AsStored(&'static str),
    /// Decoded to native pixels.
    Decoded,
}

/// The first media range we can meet for this instance's frames.
fn choose(px: &PixelFile, ranges: &[MediaRange]) -> Result<Delivery, WebError> {
    let stored = px.media_type();
    if ranges.is_empty() {
        return Ok(Delivery::AsStored(stored));
    }
    let ts_ok =
        |ts: &Option<String>, want: &str| ts.as_deref().is_none_or(|t| t == "*" || t == want);
    for r in ranges {
        // A bare single-part type asks for what multipart/related would carry.
        let part = match r.media.as_str() {
            "multipart/related" => r.part_type.as_deref().unwrap_or(OCTET_STREAM),
            "multipart/*" | "*/*" => "*/*",
            m => m,
        };
        let send = match part {
            "*/*" | "*" => Some(Delivery::AsStored(stored)),
            OCTET_STREAM if !px.is_encapsulated() => {
                ts_ok(&r.transfer_syntax, uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .then_some(Delivery::AsStored(OCTET_STREAM))
            }
            OCTET_STREAM => match r.transfer_syntax.as_deref() {
                Some("*") => Some(Delivery::AsStored(OCTET_STREAM)),
                Some(t) if t == px.transfer_syntax() => Some(Delivery::AsStored(OCTET_STREAM)),
                None | Some(uids::EXPLICIT_VR_LITTLE_ENDIAN) => Some(Delivery::Decoded),
                Some(_) => None,
            },
            "image/*" | "video/*" if px.is_encapsulated() && stored.starts_with(&part[..6]) => {
                ts_ok(&r.transfer_syntax, px.transfer_syntax())
                    .then_some(Delivery::AsStored(stored))
            }
            t if px.is_encapsulated() && t == stored => {
                ts_ok(&r.transfer_syntax, px.transfer_syntax())
                    .then_some(Delivery::AsStored(stored))
            }
            _ => None,
        };
        if let Some(send) = send {
            return Ok(send);
        }
    }
    let asked: Vec<&str> = ranges.iter().map(|r| r.text.as_str()).collect();
    Err(WebError::NotAcceptable(format!(
        "cannot send these frames as {}: they are {stored} (transfer syntax {}){}",
        asked.join(", "),
        px.transfer_syntax(),
        if px.is_encapsulated() {
            ", or application/octet-stream decoded"
        } else {
            ""
        }
    )))
}

async fn frames(
    State(svc): State<Arc<PacsService>>,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let numbers = parse_frame_list(&list)?;
    let ranges = media_ranges(&headers);
    let cached = retrieve::instance_file(&svc, &study, &series, &instance).await?;
    let path = cached.path.clone();
    let px = Arc::new(blocking(move || PixelFile::open(&path)).await?);
    for &n in &numbers {
        px.check_frame(n)?;
    }
    let send = choose(&px, &ranges)?;
    // The first frame before the status line: a frame that cannot be
    // decoded is a 406, not a broken body.
    let first = {
        let (px, n) = (px.clone(), numbers[0]);
        blocking(move || frame_part(&px, n, send)).await?
    };
    let media = match send {
        Delivery::AsStored(m) => m,
        Delivery::Decoded => OCTET_STREAM,
    };
    let rest = numbers.into_iter().skip(1);
    // The cache handle rides along: the file stays while frames are read.
    let later = futures::stream::unfold(
        (rest, px, cached),
        move |(mut rest, px, cached)| async move {
            let n = rest.next()?;
            let p = px.clone();
            let part = tokio::task::spawn_blocking(move || frame_part(&p, n, send))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
            Some((part, (rest, px, cached)))
        },
    );
    let parts = futures::StreamExt::chain(futures::stream::once(async { Ok(first) }), later);
    let boundary = multipart::new_boundary();
    let content_type = multipart::related_content_type(media, &boundary);
    let mut rsp = Response::new(Body::from_stream(multipart::streamed_body(boundary, parts)));
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).map_err(|e| WebError::Internal(e.to_string()))?,
    );
    Ok(rsp)
}

fn frame_part(px: &PixelFile, n: u32, send: Delivery) -> Result<Part, PixelError> {
    let (frame, media) = match send {
        Delivery::AsStored(media) => (px.frame(n)?, media),
        Delivery::Decoded => (px.decoded_frame(n)?, OCTET_STREAM),
    };
    Ok(Part {
        content_type: format!("{media}; transfer-syntax={}", frame.transfer_syntax),
        body: PartBody::Bytes(frame.data.into()),
    })
}
