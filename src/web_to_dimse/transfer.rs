//! Which transfer syntax a WADO-RS client gets: the Accept header read for
//! what we can produce, and native-to-native transcoding of cached files.

use super::accept::{Accept, MediaRange};
use super::WebError;
use crate::cache::{CachedInstance, Variant};
use crate::dicom::syntaxes::{is_native, NATIVE};
use axum::http::HeaderMap;
use dicom_dictionary_std::uids;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::path::Path;

const DICOM: &str = "application/dicom";

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
/// type="application/dicom"`: a syntax we can write, or `transfer-syntax=*`
/// for as stored; none acceptable → 406 saying what we can do.
pub fn negotiate(headers: &HeaderMap) -> Result<Want, WebError> {
    let accept = Accept::of(headers);
    // Explicit VR LE first: it is what a missing Accept or transfer-syntax
    // means (PS3.18 8.7.3.5.2).
    let offers: Vec<Want> = NATIVE
        .iter()
        .map(|ts| Want::Native(ts))
        .chain([Want::AsStored])
        .collect();
    let matches = |r: &MediaRange, w: &Want| {
        let ts = r.param("transfer-syntax");
        r.takes_part(DICOM, DICOM)
            && match w {
                Want::AsStored => ts == Some("*"),
                Want::Native(n) => ts.unwrap_or(uids::EXPLICIT_VR_LITTLE_ENDIAN) == *n,
            }
    };
    accept.choose(&offers, matches).ok_or_else(|| {
        accept.refuse(&format!(
            "Pons sends multipart/related; type=\"{DICOM}\" with transfer-syntax=* \
             (as stored) or one of {}",
            NATIVE.join(", ")
        ))
    })
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

    use axum::http::header;

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
                Err(WebError::NotAcceptable(m)) => assert!(m.contains("cannot send"), "{m}"),
                other => panic!("{a}: {other:?}"),
            }
        }
    }
}
