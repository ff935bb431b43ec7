//! Which transfer syntax a WADO-RS client gets: the Accept header read for
//! what we can produce, and native-to-native transcoding of cached files.

use super::WebError;
use crate::cache::{CachedInstance, Variant};
use crate::dicom::syntaxes::{is_native, NATIVE};
use axum::http::{header, HeaderMap};
use dicom_dictionary_std::uids;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::path::Path;

/// What the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// `transfer-syntax=*`: as the PACS stores it.
    AsStored,
    /// This uncompressed syntax.
    Native(&'static str),
}

impl Want {
    /// The cached copy to retrieve when nothing usable is cached: as stored,
    /// or converted to Explicit VR LE by the PACS (then rewritten by us).
    pub fn variant(self) -> Variant {
        match self {
            Want::AsStored => Variant::Stored,
            Want::Native(_) => Variant::ExplicitLe,
        }
    }

    /// Can this cached copy be sent (rewritten if need be)?
    pub fn usable(self, c: &CachedInstance) -> bool {
        match self {
            Want::AsStored => c.variant == Variant::Stored,
            Want::Native(_) => is_native(&c.transfer_syntax),
        }
    }

    /// The syntax the part will have.
    pub fn output_syntax(self, c: &CachedInstance) -> &str {
        match self {
            Want::AsStored => &c.transfer_syntax,
            Want::Native(ts) => ts,
        }
    }
}

/// Reads the Accept header of a request for `multipart/related;
/// type="application/dicom"`: the first acceptable media range (highest q
/// first) decides; none acceptable → 406 saying what we can do.
pub fn negotiate(headers: &HeaderMap) -> Result<Want, WebError> {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if accept.is_empty() {
        return Ok(Want::Native(uids::EXPLICIT_VR_LITTLE_ENDIAN));
    }
    let mut ranges: Vec<(f32, Option<Want>)> = Vec::new();
    let mut asked = Vec::new();
    for range in accept.iter().flat_map(|v| split_outside_quotes(v, ',')) {
        let mut parts = split_outside_quotes(range, ';').into_iter();
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let (mut kind, mut ts, mut q) = (None, None, 1.0f32);
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "type" => kind = Some(v.to_ascii_lowercase()),
                "transfer-syntax" => ts = Some(v.to_owned()),
                "q" => q = v.parse().unwrap_or(0.0),
                _ => {}
            }
        }
        let dicom_parts = match media.as_str() {
            "multipart/related" => kind.as_deref().is_none_or(|k| k == "application/dicom"),
            // A single part asked for: it comes wrapped in multipart anyway.
            "application/dicom" | "*/*" | "multipart/*" => true,
            _ => false,
        };
        if !dicom_parts || q <= 0.0 {
            asked.push(range.trim().to_owned());
            continue;
        }
        let want = match ts.as_deref() {
            None => Some(Want::Native(uids::EXPLICIT_VR_LITTLE_ENDIAN)),
            Some("*") => Some(Want::AsStored),
            Some(t) => NATIVE.iter().find(|n| **n == t).map(|n| Want::Native(n)),
        };
        if want.is_none() {
            asked.push(range.trim().to_owned());
        }
        ranges.push((q, want));
    }
    // Stable sort: among equal q the header's order stands.
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranges.into_iter().find_map(|(_, w)| w).ok_or_else(|| {
        WebError::NotAcceptable(format!(
            "cannot produce {}: Pons sends multipart/related; type=\"application/dicom\" \
             with transfer-syntax=* (as stored) or one of {}",
            asked.join(", "),
            NATIVE.join(", ")
        ))
    })
}

pub(super) fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
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

/// A whole PS3.10 file rewritten in another uncompressed syntax (one
/// instance in memory; blocking).
pub fn transcode(path: &Path, ts_uid: &str) -> Result<Vec<u8>, String> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| format!("unknown transfer syntax {ts_uid}"))?;
    let mut obj = dicom_object::OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| format!("cannot read cached instance: {e}"))?;
    obj.meta_mut().set_transfer_syntax(ts);
    let mut out = Vec::with_capacity(std::fs::metadata(path).map_or(0, |m| m.len() as usize));
    obj.write_all(&mut out)
        .map_err(|e| format!("cannot rewrite the instance as {ts_uid}: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn want(accept: &str) -> Result<Want, WebError> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        negotiate(&h)
    }

    const ELE: Want = Want::Native(uids::EXPLICIT_VR_LITTLE_ENDIAN);

    #[test]
    fn reads_what_clients_send() {
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), ELE);
        assert_eq!(
            want("multipart/related; type=\"application/dicom\"").unwrap(),
            ELE
        );
        assert_eq!(
            want("multipart/related; type=\"application/dicom\"; transfer-syntax=*").unwrap(),
            Want::AsStored
        );
        assert_eq!(
            want("multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2")
                .unwrap(),
            Want::Native(uids::IMPLICIT_VR_LITTLE_ENDIAN)
        );
        assert_eq!(want("*/*").unwrap(), ELE);
        // The first one we can produce, by q then order.
        assert_eq!(
            want(
                "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50, \
                 multipart/related; type=\"application/dicom\"; transfer-syntax=*; q=0.5"
            )
            .unwrap(),
            Want::AsStored
        );
        assert_eq!(
            want(
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*; q=0.5, \
                 multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.2"
            )
            .unwrap(),
            Want::Native(NATIVE[2])
        );
    }

    #[test]
    fn refuses_what_we_cannot_produce() {
        for a in [
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50",
            "multipart/related; type=\"application/octet-stream\"",
            "image/jpeg",
            "multipart/related; type=\"application/dicom\"; q=0",
        ] {
            match want(a) {
                Err(WebError::NotAcceptable(m)) => assert!(m.contains("cannot produce"), "{m}"),
                other => panic!("{a}: {other:?}"),
            }
        }
    }
}
