//! WADO-RS rendered and thumbnail (PS3.18 9.4, 9.5) for studies, series,
//! instances and frames: image/jpeg (default) or image/png, with the
//! `window`, `viewport` and `quality` query parameters. A study or series
//! is shown by the first of its instances that has pixel data; an instance
//! by its first frame.

use super::accept::Accept;
use super::frames::{blocking, parse_frame_list};
use super::retrieve::{self, Scope};
use super::{PacsService, WebError};
use crate::cache::{CachedInstance, Variant};
use crate::pixels::{Format, PixelFile, RenderOptions, Window, WindowFunction};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// A thumbnail fits in this square unless `viewport` says otherwise.
pub const THUMBNAIL_SIZE: u32 = 128;

type Params = Query<Vec<(String, String)>>;

pub fn routes() -> Router<Arc<PacsService>> {
    const INSTANCE: &str = "/studies/{study}/series/{series}/instances/{instance}";
    let mut r = Router::new();
    for (suffix, thumbnail) in [("rendered", false), ("thumbnail", true)] {
        r = r
            .route(
                &format!("/studies/{{study}}/{suffix}"),
                get(move |svc, Path(study), q, h| {
                    of_scope(svc, Scope::Study(study), thumbnail, q, h)
                }),
            )
            .route(
                &format!("/studies/{{study}}/series/{{series}}/{suffix}"),
                get(move |svc, Path((st, se)), q, h| {
                    of_scope(svc, Scope::Series(st, se), thumbnail, q, h)
                }),
            )
            .route(
                &format!("{INSTANCE}/{suffix}"),
                get(move |svc, Path((st, se, i)), q, h| {
                    instance(svc, (st, se, i), None, thumbnail, q, h)
                }),
            )
            .route(
                &format!("{INSTANCE}/frames/{{frames}}/{suffix}"),
                get(move |svc, Path((st, se, i, f)), q, h| {
                    instance(svc, (st, se, i), Some(f), thumbnail, q, h)
                }),
            );
    }
    r
}

async fn of_scope(
    State(svc): State<Arc<PacsService>>,
    scope: Scope,
    thumbnail: bool,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let opts = options(&params, &headers, thumbnail)?;
    scope.check()?;
    let mut found = retrieve::instances(&svc, &scope, |_| true, Variant::Stored).await?;
    while let Some(c) = found.next().await {
        match render(c?, 1, opts.clone()).await {
            Err(WebError::NotFound(_)) => continue, // no pixel data: the next one
            done => return done,
        }
    }
    Err(WebError::NotFound(format!(
        "no instance of {} on PACS {} has pixel data",
        scope.describe(),
        svc.name
    )))
}

async fn instance(
    State(svc): State<Arc<PacsService>>,
    (study, series, instance): (String, String, String),
    frames: Option<String>,
    thumbnail: bool,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let frame = match frames.as_deref().map(parse_frame_list).transpose()? {
        None => 1,
        Some(list) if list.len() == 1 => list[0],
        Some(_) => {
            return Err(WebError::BadRequest(
                "rendered frames come one at a time: name a single frame".into(),
            ))
        }
    };
    let opts = options(&params, &headers, thumbnail)?;
    let c = retrieve::instance_file(&svc, &study, &series, &instance).await?;
    render(c, frame, opts).await
}

/// Renders frame `frame` of a cached instance (blocking pool).
pub(super) async fn render(
    c: CachedInstance,
    frame: u32,
    opts: RenderOptions,
) -> Result<Response, WebError> {
    let format = opts.format;
    let bytes = blocking(move || {
        let px = PixelFile::open(&c.path)?;
        let image = px.render(frame, &opts);
        drop(c); // the cache may evict the file now
        image
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, format.media_type())], bytes).into_response())
}

/// Query parameters and Accept header → what to render.
fn options(
    params: &[(String, String)],
    headers: &HeaderMap,
    thumbnail: bool,
) -> Result<RenderOptions, WebError> {
    let mut opts = RenderOptions {
        format: format(headers)?,
        viewport: thumbnail.then_some((THUMBNAIL_SIZE, THUMBNAIL_SIZE)),
        ..Default::default()
    };
    for (k, v) in params {
        match k.as_str() {
            "window" => opts.window = Some(parse_window(v)?),
            "viewport" => opts.viewport = Some(parse_viewport(v)?),
            "quality" => opts.quality = parse_quality("quality", v)?,
            _ => {} // annotation, charset, iccprofile: nothing to do
        }
    }
    Ok(opts)
}

fn format(headers: &HeaderMap) -> Result<Format, WebError> {
    let accept = Accept::of(headers);
    accept
        .choose(&[Format::Jpeg, Format::Png], |r, f| {
            r.covers(f.media_type())
        })
        .ok_or_else(|| accept.refuse("rendered images are image/jpeg or image/png"))
}

/// `center,width[,function]` with function linear, linear-exact or sigmoid.
pub(super) fn parse_window(v: &str) -> Result<Window, WebError> {
    let bad = |why: &str| WebError::BadRequest(format!("window={v:?}: {why}"));
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad("expected center,width[,function]"));
    }
    let center: f64 = parts[0]
        .parse()
        .map_err(|_| bad("center is not a number"))?;
    let width: f64 = parts[1].parse().map_err(|_| bad("width is not a number"))?;
    if !center.is_finite() || !width.is_finite() || width <= 0.0 {
        return Err(bad("width must be a positive number"));
    }
    let function = match parts.get(2).map(|f| f.to_ascii_lowercase()).as_deref() {
        None | Some("linear") => WindowFunction::Linear,
        Some("linear-exact" | "linear_exact") => WindowFunction::LinearExact,
        Some("sigmoid") => WindowFunction::Sigmoid,
        Some(_) => return Err(bad("function must be linear, linear-exact or sigmoid")),
    };
    Ok(Window {
        center,
        width,
        function,
    })
}

/// `width,height`: the image is fitted inside, keeping its aspect ratio.
fn parse_viewport(v: &str) -> Result<(u32, u32), WebError> {
    let bad = |why: &str| WebError::BadRequest(format!("viewport={v:?}: {why}"));
    let dims: Vec<&str> = v.split(',').map(str::trim).collect();
    if dims.len() != 2 {
        return Err(bad(
            "expected width,height (source regions are not supported)",
        ));
    }
    let dim = |s: &str| match s.parse::<u32>() {
        Ok(n) if (1..=MAX_SIDE).contains(&n) => Ok(n),
        _ => Err(bad(&format!(
            "sizes are whole numbers from 1 to {MAX_SIDE}"
        ))),
    };
    Ok((dim(dims[0])?, dim(dims[1])?))
}

/// Larger images would only burn memory.
pub(super) const MAX_SIDE: u32 = 8192;

pub(super) fn parse_quality(name: &str, v: &str) -> Result<u8, WebError> {
    match v.trim().parse::<u8>() {
        Ok(q) if (1..=100).contains(&q) => Ok(q),
        _ => Err(WebError::BadRequest(format!(
            "{name}={v:?}: a whole number from 1 to 100"
        ))),
    }
}
