//! WADO-URI (PS3.18 chapter 9, "URI service") at `{base_path}/wado`:
//! `?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…` with
//! `contentType` application/dicom (in `transferSyntax`, Explicit VR LE by
//! default) or image/jpeg, image/png (`frameNumber`, `windowCenter`,
//! `windowWidth`, `rows`, `columns`, `imageQuality`).

use super::accept::Accept;
use super::frames::blocking;
use super::rendered::{self, parse_quality, MAX_SIDE};
use super::retrieve::{self, Scope};
use super::transfer::Want;
use super::{wado, PacsService, WebError};
use crate::dicom::syntaxes::NATIVE;
use crate::pixels::{Format, PixelError, PixelFile, RenderOptions, Window, WindowFunction};
use crate::web::multipart::PartBody;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dicom_dictionary_std::uids;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

pub fn routes() -> Router<Arc<PacsService>> {
    Router::new().route("/wado", get(wado_uri))
}

const DICOM: &str = "application/dicom";

async fn wado_uri(
    State(svc): State<Arc<PacsService>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, WebError> {
    let param = |name: &str| q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let required = |name: &str| {
        param(name).ok_or_else(|| WebError::BadRequest(format!("missing parameter {name}")))
    };
    if required("requestType")? != "WADO" {
        return Err(WebError::BadRequest("requestType must be WADO".to_owned()));
    }
    let scope = Scope::Instance(
        required("studyUID")?.to_owned(),
        required("seriesUID")?.to_owned(),
        required("objectUID")?.to_owned(),
    );
    scope.check()?;
    for unsupported in ["anonymize", "region"] {
        if param(unsupported).is_some() {
            return Err(WebError::BadRequest(format!(
                "parameter {unsupported} is not supported"
            )));
        }
    }
    // A list of media types, read as an Accept header is.
    let wanted = param("contentType").unwrap_or("image/jpeg");
    let content_type = Accept::parse([wanted])
        .choose(&["image/jpeg", "image/png", DICOM], |r, m| r.covers(m))
        .ok_or_else(|| {
            WebError::NotAcceptable(format!(
                "contentType {wanted:?}: Pons serves application/dicom, image/jpeg and image/png"
            ))
        })?;
    if content_type == DICOM {
        return dicom(&svc, scope, param("transferSyntax")).await;
    }
    let format = if content_type == "image/png" {
        Format::Png
    } else {
        Format::Jpeg
    };
    let opts = render_options(&q, format)?;
    let frame = match param("frameNumber") {
        None => 1,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(WebError::BadRequest(format!(
                    "frameNumber={v:?}: frames count from 1"
                )))
            }
        },
    };
    let Scope::Instance(st, se, i) = &scope else {
        unreachable!("built above as an instance")
    };
    let c = retrieve::instance_file(&svc, st, se, i).await?;
    // Without a contentType, objects without pixels come as they are.
    if param("contentType").is_none() {
        let path = c.path.clone();
        let has_pixels = blocking(move || match PixelFile::open(&path) {
            Err(PixelError::NoPixelData) => Ok(false),
            other => other.map(|_| true),
        })
        .await?;
        if !has_pixels {
            return dicom(&svc, scope, param("transferSyntax")).await;
        }
    }
    rendered::render(c, frame, opts).await
}

/// The instance as a PS3.10 file in the syntax asked for.
async fn dicom(svc: &PacsService, scope: Scope, ts: Option<&str>) -> Result<Response, WebError> {
    let want = match ts {
        None => Want::Native(uids::EXPLICIT_VR_LITTLE_ENDIAN),
        Some(t) => match NATIVE.iter().find(|n| **n == t) {
            Some(n) => Want::Native(n),
            None => Want::AsStored,
        },
    };
    let mut found = retrieve::instances(svc, &scope, |c| want.usable(c), want.variant()).await?;
    let c = match found.next().await {
        Some(c) => c?,
        None => return Err(retrieve::not_found(svc, &scope)),
    };
    let usable = want.usable(&c) && (want != Want::AsStored || ts == Some(&c.transfer_syntax));
    if !usable {
        return Err(WebError::NotAcceptable(format!(
            "transferSyntax {}: the instance is stored as {}; ask for that or one of {}",
            ts.unwrap_or(uids::EXPLICIT_VR_LITTLE_ENDIAN),
            c.transfer_syntax,
            NATIVE.join(", ")
        )));
    }
    let part = wado::part(c, want)
        .await
        .map_err(|e| WebError::Internal(format!("cannot read the cached instance: {e}")))?;
    let body = match part.body {
        PartBody::File(f, len) => Body::from_stream(tokio_util::io::ReaderStream::new(f.take(len))),
        PartBody::Bytes(b) => Body::from(b),
    };
    Ok(([(header::CONTENT_TYPE, DICOM)], body).into_response())
}

fn render_options(q: &HashMap<String, String>, format: Format) -> Result<RenderOptions, WebError> {
    let number = |name: &str| -> Result<Option<f64>, WebError> {
        q.get(name)
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| WebError::BadRequest(format!("{name}={v:?}: not a number")))
            })
            .transpose()
    };
    let window = match (number("windowCenter")?, number("windowWidth")?) {
        (None, None) => None,
        (Some(center), Some(width)) if width > 0.0 => Some(Window {
            center,
            width,
            function: WindowFunction::Linear,
        }),
        (Some(_), Some(_)) => {
            return Err(WebError::BadRequest(
                "windowWidth must be positive".to_owned(),
            ))
        }
        _ => {
            return Err(WebError::BadRequest(
                "windowCenter and windowWidth come together".to_owned(),
            ))
        }
    };
    let side = |name: &str| -> Result<Option<u32>, WebError> {
        q.get(name)
            .map(|v| match v.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_SIDE).contains(&n) => Ok(n),
                _ => Err(WebError::BadRequest(format!(
                    "{name}={v:?}: a whole number from 1 to {MAX_SIDE}"
                ))),
            })
            .transpose()
    };
    let viewport = match (side("columns")?, side("rows")?) {
        (None, None) => None,
        (w, h) => Some((w.unwrap_or(MAX_SIDE), h.unwrap_or(MAX_SIDE))),
    };
    let quality = match q.get("imageQuality") {
        Some(v) => parse_quality("imageQuality", v)?,
        None => RenderOptions::default().quality,
    };
    Ok(RenderOptions {
        format,
        window,
        viewport,
        quality,
    })
}
