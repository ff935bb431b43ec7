//! WADO-RS metadata of studies, series and instances as
//! application/dicom+json, bulk elements (pixel data, long binary values)
//! as BulkDataURI, and the bulk data behind those URIs.

use super::accept::{require_json, Accept, DICOM_JSON};
use super::retrieve::{self, Scope};
use super::wado::{if_none_match, not_modified};
use super::{PacsService, WebError};
use crate::cache::{CachedInstance, Variant};
use crate::dicom::part10::{parse_part10_header, Part10Head};
use crate::dicom::scan::DatasetScanner;
use crate::pixels::PixelFile;
use crate::translate::json::{find_bulk, to_json, Bulk};
use crate::web::multipart::{self, Part, PartBody};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use futures::StreamExt;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::sync::Arc;

/// Binary values longer than this go by BulkDataURI (pixel data always).
const BULK_THRESHOLD: usize = 1024;
const OCTET_STREAM: &str = "application/octet-stream";

pub fn routes() -> Router<Arc<PacsService>> {
    Router::new()
        .route("/studies/{study}/metadata", get(study))
        .route("/studies/{study}/series/{series}/metadata", get(series))
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{*path}",
            get(bulkdata),
        )
}

async fn study(
    State(svc): State<Arc<PacsService>>,
    Path(study): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    metadata(&svc, Scope::Study(study), &headers, &uri).await
}

async fn series(
    State(svc): State<Arc<PacsService>>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    metadata(&svc, Scope::Series(study, series), &headers, &uri).await
}

async fn instance(
    State(svc): State<Arc<PacsService>>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    metadata(
        &svc,
        Scope::Instance(study, series, instance),
        &headers,
        &uri,
    )
    .await
}

async fn metadata(
    svc: &PacsService,
    scope: Scope,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, WebError> {
    scope.check()?;
    require_json(headers, "metadata")?;
    // Metadata cares for no syntax: any cached copy serves, and a retrieval
    // fetches what frames and rendered views will want next (as stored).
    let mut found = retrieve::instances(svc, &scope, |_| true, Variant::Stored).await?;
    // Handles only (the files wait on disk): the ETag needs them all.
    let mut all = Vec::new();
    while let Some(c) = found.next().await {
        all.push(c?);
    }
    all.sort_by(|a, b| a.uids.sop_instance.cmp(&b.uids.sop_instance));
    let etag = etag_of(&all);
    if if_none_match(headers, &etag) {
        return Ok(not_modified(&etag));
    }
    let base = svc.public_root(headers, uri);
    let n = all.len();
    let body = futures::stream::iter(all.into_iter().enumerate()).then(move |(i, c)| {
        let base = base.clone();
        async move {
            let mut bytes = tokio::task::spawn_blocking(move || instance_json(&c, &base))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
            bytes.insert(0, if i == 0 { b'[' } else { b',' });
            if i + 1 == n {
                bytes.push(b']');
            }
            Ok::<_, std::io::Error>(Bytes::from(bytes))
        }
    });
    let mut rsp = Response::new(Body::from_stream(body));
    let h = rsp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(DICOM_JSON));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    Ok(rsp)
}

/// Instances never change under their UID: UIDs, copies and sizes name
/// the answer.
fn etag_of(all: &[CachedInstance]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    "metadata".hash(&mut h);
    for c in all {
        (&c.uids.sop_instance, &c.transfer_syntax, c.size).hash(&mut h);
    }
    format!("\"{:016x}\"", h.finish())
}

/// The data set up to Pixel Data, read without the pixels.
fn header_of(c: &CachedInstance) -> Result<InMemDicomObject, String> {
    let file = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(&c.path)
        .map_err(|e| format!("cannot read cached instance: {e}"))?;
    Ok(file.into_inner())
}

/// One instance's DICOM JSON (blocking; one instance's attributes in memory,
/// never its pixels).
fn instance_json(c: &CachedInstance, base: &str) -> Result<Vec<u8>, String> {
    let mut obj = header_of(c)?;
    // Pixel Data was not read; a one-byte stand-in gets it its BulkDataURI
    // (the JSON writer names pixel data by URI whatever its size).
    if let Some(vr) = pixel_data_vr(c)? {
        let vr = VR::from_binary(vr).unwrap_or(VR::OB);
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            vr,
            PrimitiveValue::from(vec![0u8]),
        ));
    }
    let prefix = format!(
        "{base}/studies/{}/series/{}/instances/{}/bulkdata/",
        c.uids.study, c.uids.series, c.uids.sop_instance
    );
    let uri = |path: &str| format!("{prefix}{path}");
    let json = to_json(
        &obj,
        &Bulk::Uri {
            threshold: BULK_THRESHOLD,
            uri: &uri,
        },
    );
    serde_json::to_vec(&json).map_err(|e| e.to_string())
}

/// The VR of the file's top-level Pixel Data, reading only up to its header.
fn pixel_data_vr(c: &CachedInstance) -> Result<Option<[u8; 2]>, String> {
    let io = |e: std::io::Error| format!("cannot read cached instance: {e}");
    let mut file = std::fs::File::open(&c.path).map_err(io)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0;
    let mut scanner = None;
    loop {
        let n = file.read(&mut buf[have..]).map_err(io)?;
        if n == 0 {
            return Ok(None);
        }
        match scanner.as_mut() {
            None => {
                have += n;
                let start = match parse_part10_header(&buf[..have]) {
                    Part10Head::Complete(start, _) => start,
                    Part10Head::NeedMore if have < buf.len() => continue,
                    _ => return Err("cached instance has no readable file meta group".into()),
                };
                let mut s = DatasetScanner::new(&c.transfer_syntax)
                    .ok_or_else(|| format!("unknown transfer syntax {}", c.transfer_syntax))?;
                s.feed(&buf[start..have]);
                scanner = Some(s);
                have = 0;
            }
            Some(s) => s.feed(&buf[..n]),
        }
        if let Some(vr) = scanner.as_ref().and_then(|s| s.uids().pixel_data_vr) {
            return Ok(Some(vr));
        }
    }
}

async fn bulkdata(
    State(svc): State<Arc<PacsService>>,
    Path((study, series, instance, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let c = retrieve::instance_file(&svc, &study, &series, &instance).await?;
    let path = path.trim_matches('/').to_owned();
    let parts = tokio::task::spawn_blocking(move || bulk_parts(&c, &path, &headers))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    let boundary = multipart::new_boundary();
    let part_type = match parts.first() {
        Some(p) if parts.iter().all(|q| q.content_type == p.content_type) => p.content_type.clone(),
        _ => "*/*".to_owned(),
    };
    let stream = futures::stream::iter(parts.into_iter().map(Ok));
    let mut rsp = Response::new(Body::from_stream(multipart::streamed_body(
        boundary.clone(),
        stream,
    )));
    let ct = multipart::related_content_type(&part_type, &boundary);
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&ct).map_err(|e| WebError::Internal(e.to_string()))?,
    );
    Ok(rsp)
}

/// The parts of one bulk data value (blocking).
fn bulk_parts(c: &CachedInstance, path: &str, headers: &HeaderMap) -> Result<Vec<Part>, WebError> {
    let missing = || {
        WebError::NotFound(format!(
            "instance {} has no bulk data at {path}",
            c.uids.sop_instance
        ))
    };
    let unreadable = |e: String| WebError::Internal(e);
    if path == "7FE00010" {
        let pixels = PixelFile::open(&c.path).map_err(|e| match e {
            crate::pixels::PixelError::NoPixelData => missing(),
            other => unreadable(other.to_string()),
        })?;
        let frames = 1..=pixels.number_of_frames();
        if !pixels.is_encapsulated() {
            // Uncompressed: the whole value, little endian, as one part.
            let mut data = Vec::new();
            for f in frames {
                let frame = pixels.frame(f).map_err(|e| unreadable(e.to_string()))?;
                data.extend_from_slice(&frame.data);
            }
            return Ok(vec![bytes_part(OCTET_STREAM, data)]);
        }
        // Uncompressed bytes go to anyone; compressed frames only to a
        // client that takes their media type.
        let media = pixels.media_type();
        let accept = Accept::of(headers);
        if accept
            .choose(&[media], |r, m| r.takes_part(m, OCTET_STREAM))
            .is_none()
        {
            return Err(accept.refuse(&format!(
                "the pixel data is compressed ({}): accept {media} or use /frames",
                c.transfer_syntax
            )));
        }
        // Compressed: one part per frame, in its own media type.
        return frames
            .map(|f| {
                let frame = pixels.frame(f).map_err(|e| unreadable(e.to_string()))?;
                Ok(bytes_part(frame.media_type, frame.data))
            })
            .collect();
    }
    let obj = header_of(c).map_err(unreadable)?;
    let e = find_bulk(&obj, path).ok_or_else(missing)?;
    let data = e.to_bytes().map_err(|_| missing())?;
    Ok(vec![bytes_part(OCTET_STREAM, data.into_owned())])
}

fn bytes_part(content_type: &str, data: Vec<u8>) -> Part {
    Part {
        content_type: content_type.to_owned(),
        body: PartBody::Bytes(Bytes::from(data)),
    }
}
