//! WADO-RS frames: `…/instances/{i}/frames/{1,3,5}` as multipart/related,
//! each frame as stored (native pixels as application/octet-stream,
//! compressed ones with their codec's media type) or decoded to
//! application/octet-stream when that is all the Accept header allows.
//! Frames are read and decoded one at a time, off the async threads.

use super::accept::{media_covers, Accept, MediaRange};
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

/// How the frames of one instance go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// As stored, labelled with this media type.
    AsStored(&'static str),
    /// Decoded to native pixels.
    Decoded,
}

/// The delivery the client likes best for this instance's frames.
fn choose(px: &PixelFile, accept: &Accept) -> Result<Delivery, WebError> {
    let stored = px.media_type();
    let offers = [
        Delivery::AsStored(stored),
        Delivery::AsStored(OCTET_STREAM),
        Delivery::Decoded,
    ];
    accept
        .choose(&offers, |r, d| serve(px, r) == Some(*d))
        .ok_or_else(|| {
            accept.refuse(&format!(
                "these frames are {stored} (transfer syntax {}){}",
                px.transfer_syntax(),
                if px.is_encapsulated() {
                    ", or application/octet-stream decoded"
                } else {
                    ""
                }
            ))
        })
}

/// What one media range has us send, if anything.
fn serve(px: &PixelFile, r: &MediaRange) -> Option<Delivery> {
    let stored = px.media_type();
    let ts = r.param("transfer-syntax");
    let ts_ok = |want: &str| ts.is_none_or(|t| t == "*" || t == want);
    let part = r.part_type(OCTET_STREAM);
    if part == "*/*" {
        return Some(Delivery::AsStored(stored));
    }
    if part.eq_ignore_ascii_case(OCTET_STREAM) {
        if !px.is_encapsulated() {
            return ts_ok(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .then_some(Delivery::AsStored(OCTET_STREAM));
        }
        return match ts {
            Some("*") => Some(Delivery::AsStored(OCTET_STREAM)),
            Some(t) if t == px.transfer_syntax() => Some(Delivery::AsStored(OCTET_STREAM)),
            None | Some(uids::EXPLICIT_VR_LITTLE_ENDIAN) => Some(Delivery::Decoded),
            Some(_) => None,
        };
    }
    // Compressed frames in their own type, or one covering it (image/*).
    (px.is_encapsulated() && media_covers(part, stored) && ts_ok(px.transfer_syntax()))
        .then_some(Delivery::AsStored(stored))
}

async fn frames(
    State(svc): State<Arc<PacsService>>,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let numbers = parse_frame_list(&list)?;
    let cached = retrieve::instance_file(&svc, &study, &series, &instance).await?;
    let path = cached.path.clone();
    let px = Arc::new(blocking(move || PixelFile::open(&path)).await?);
    for &n in &numbers {
        px.check_frame(n)?;
    }
    let send = choose(&px, &Accept::of(&headers))?;
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
