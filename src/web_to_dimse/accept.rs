//! The one Accept parser of the DICOMweb face (RFC 9110 12.5.1, PS3.18
//! 8.7): every Accept header and every comma list, q-values (0 refuses),
//! quoted parameters (`type`, `transfer-syntax`), wildcards. A route lists
//! what it can send and [`Accept::choose`] picks what the client likes best;
//! [`Accept::refuse`] is the 406 when nothing fits.
//!
//! Hostile headers cost little: ranges borrow from the header, parameters
//! are read in place, and past [`MAX_RANGES`] ranges the rest is ignored.

use super::WebError;
use axum::http::{header, HeaderMap};
use std::cmp::Reverse;

/// Ranges read per request; browsers send under ten.
pub const MAX_RANGES: usize = 64;

pub const DICOM_JSON: &str = "application/dicom+json";

/// One media range, borrowed from the header.
#[derive(Debug, Clone, Copy)]
pub struct MediaRange<'a> {
    /// `type/subtype` as written, e.g. `multipart/related`, `image/*`.
    pub media: &'a str,
    /// The raw `; name=value` list after `media`, q included.
    params: &'a str,
    /// Weight in thousandths: 1000 unless q says otherwise; 0 refuses.
    pub q: u16,
    /// Concrete type and subtype count one each, parameters one each:
    /// the more specific range decides (RFC 9110 12.5.1).
    specificity: usize,
    /// The range as written, for error messages.
    pub text: &'a str,
}

impl<'a> MediaRange<'a> {
    fn parse(text: &'a str) -> Option<MediaRange<'a>> {
        let text = text.trim();
        if text.is_empty() {
            return None; // `a, , b` is allowed by the list syntax
        }
        let (media, params) = text.split_once(';').unwrap_or((text, ""));
        let media = media.trim();
        let mut r = MediaRange {
            media,
            params,
            q: 1000,
            specificity: 0,
            text,
        };
        r.specificity = media.split('/').filter(|p| p.trim() != "*").count() + r.params().count();
        if let Some((_, q)) = params_of(params).find(|(k, _)| k.eq_ignore_ascii_case("q")) {
            // An unreadable weight is no permission: we do not guess.
            r.q = qvalue(q).unwrap_or(0);
        }
        Some(r)
    }

    /// The parameters but q, names as written, values unquoted.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        params_of(self.params).filter(|(k, _)| !k.eq_ignore_ascii_case("q"))
    }

    /// The value of parameter `name` (the first if repeated), unquoted.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Does this range cover `media` (`type/subtype`)?
    pub fn covers(&self, media: &str) -> bool {
        media_covers(self.media, media)
    }

    /// The media type of the parts asked for: multipart/related's `type`
    /// (`default` without one), `*/*` for multipart/* and */*, else the
    /// range itself (a single part asked for comes wrapped in multipart).
    pub fn part_type(&self, default: &'a str) -> &'a str {
        if self.media.eq_ignore_ascii_case("multipart/related") {
            self.param("type").unwrap_or(default)
        } else if self.media == "*/*" || self.media.eq_ignore_ascii_case("multipart/*") {
            "*/*"
        } else {
            self.media
        }
    }

    /// Does this range take parts of type `media`? See [`Self::part_type`].
    pub fn takes_part(&self, media: &str, default: &'a str) -> bool {
        media_covers(self.part_type(default), media)
    }
}

/// Does `pattern` (`type/subtype`, `type/*` or `*/*`) cover `media`?
/// Types are case-insensitive.
pub fn media_covers(pattern: &str, media: &str) -> bool {
    let (Some((pt, ps)), Some((mt, ms))) = (pattern.split_once('/'), media.split_once('/')) else {
        return false;
    };
    let (pt, ps) = (pt.trim(), ps.trim());
    (pt == "*" && ps == "*")
        || (pt.eq_ignore_ascii_case(mt) && (ps == "*" || ps.eq_ignore_ascii_case(ms)))
}

/// The media ranges of a request, best first.
#[derive(Debug)]
pub struct Accept<'a> {
    ranges: Vec<MediaRange<'a>>,
}

impl<'a> Accept<'a> {
    /// Every Accept header of a request, as one list (RFC 9110 5.3);
    /// values that are not visible ASCII are skipped.
    pub fn of(headers: &'a HeaderMap) -> Accept<'a> {
        let values = headers.get_all(header::ACCEPT).iter();
        Accept::parse(values.filter_map(|v| v.to_str().ok()))
    }

    /// Comma lists of media ranges (headers, or a query parameter).
    pub fn parse(values: impl IntoIterator<Item = &'a str>) -> Accept<'a> {
        let mut ranges: Vec<MediaRange<'a>> = values
            .into_iter()
            .flat_map(|v| split_unquoted(v, b','))
            .filter_map(MediaRange::parse)
            .take(MAX_RANGES)
            .collect();
        // Heaviest first, then the more specific; a stable sort keeps the
        // client's order among equals.
        ranges.sort_by_key(|r| (Reverse(r.q), Reverse(r.specificity)));
        Accept { ranges }
    }

    /// No media range at all: the client takes anything (RFC 9110 12.5.1).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The offer the client likes best; `offers` are in our order of
    /// preference, the first being what goes without an Accept. Each offer
    /// is weighed by the most specific range that `matches` it, so `*/*,
    /// a/b;q=0` refuses a/b; among acceptable offers the one whose range
    /// comes first wins, then ours.
    pub fn choose<T: Copy>(
        &self,
        offers: &[T],
        matches: impl Fn(&MediaRange<'a>, &T) -> bool,
    ) -> Option<T> {
        if self.is_empty() {
            return offers.first().copied();
        }
        offers
            .iter()
            .filter_map(|o| {
                let (rank, r) = self
                    .ranges
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| matches(r, o))
                    .max_by_key(|(i, r)| (r.specificity, Reverse(*i)))?;
                (r.q > 0).then_some((rank, *o))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, o)| o)
    }

    /// The 406 for when nothing offered is acceptable: what was asked,
    /// then `offered`, what we could have sent.
    pub fn refuse(&self, offered: &str) -> WebError {
        let asked: Vec<&str> = self.ranges.iter().map(|r| r.text).collect();
        WebError::NotAcceptable(format!("cannot send {}: {offered}", asked.join(", ")))
    }
}

/// QIDO-RS and metadata answer DICOM JSON only; plain application/json is
/// taken as asking for it.
pub fn require_json(headers: &HeaderMap, what: &str) -> Result<(), WebError> {
    let accept = Accept::of(headers);
    let json = |r: &MediaRange, _: &()| {
        r.covers(DICOM_JSON) || r.media.eq_ignore_ascii_case("application/json")
    };
    match accept.choose(&[()], json) {
        Some(()) => Ok(()),
        None => Err(accept.refuse(&format!("{what} is answered as {DICOM_JSON}"))),
    }
}

/// `name=value` pairs of a `;` list; values lose their quotes (escapes
/// stay: no value we read has any). Pieces without `=` are skipped.
fn params_of(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    split_unquoted(raw, b';').filter_map(|p| {
        let (k, v) = p.split_once('=')?;
        let v = v.trim();
        let unquoted = v.strip_prefix('"').and_then(|u| u.strip_suffix('"'));
        Some((k.trim(), unquoted.unwrap_or(v)))
    })
}

/// `0`, `0.5`, `1.000`… in thousandths; anything else (or out of 0..=1) is None.
fn qvalue(v: &str) -> Option<u16> {
    let q: f32 = v.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&q)
        .then(|| (q * 1000.0).round() as u16)
}

/// Splits at `sep` outside double quotes (in which a backslash escapes).
/// An unterminated quote runs to the end.
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, b) in s.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                // `sep` is ASCII, so `i` is a char boundary.
                _ if b == sep && !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// Rendered images: plain media types, wildcards, q, several headers.
    #[test]
    fn picks_by_weight_specificity_and_order() {
        let table: &[(&[&str], Option<&str>)] = &[
            (&[], Some("image/jpeg")),
            (&["image/png"], Some("image/png")),
            (&["IMAGE/PNG"], Some("image/png")),
            (&["image/*"], Some("image/jpeg")),
            (&["*/*"], Some("image/jpeg")),
            (&["image/png, image/jpeg"], Some("image/png")),
            (&["image/jpeg;q=0.5, image/png"], Some("image/png")),
            (&["image/jpeg ; q=0.5 ,image/png;q=0.6"], Some("image/png")),
            (&["*/*, image/png"], Some("image/png")),
            // q=0 refuses, even under a wildcard that allows it.
            (&["image/*, image/jpeg;q=0"], Some("image/png")),
            (&["*/*;q=0.1, image/jpeg;q=0, image/png;q=0"], None),
            (&["*/*;q=0"], None),
            (&["*/*;q=0, image/png"], Some("image/png")),
            // Several headers are one list.
            (&["image/gif", "image/png"], Some("image/png")),
            (&["image/jpeg;q=0", "*/*"], Some("image/png")),
            (&["image/gif", "text/html"], None),
            // An unreadable or out-of-range weight refuses that range.
            (&["image/png;q=abc, image/jpeg;q=0.1"], Some("image/jpeg")),
            (&["image/png;q=1.5"], None),
            (&["image/png;q=NaN"], None),
            // A quoted comma or semicolon is part of its value.
            (
                &["image/png; x=\"a,b;c\", image/jpeg;q=0.5"],
                Some("image/png"),
            ),
            (
                &["image/gif; x=\"a\\\",image/png\", image/jpeg;q=0.5"],
                Some("image/jpeg"),
            ),
            // Garbage: nothing it names can be sent …
            (&["garbage"], None),
            (&["image/gif; x=\"unterminated, image/png"], None),
            (&["image/"], None),
            (&["/png"], None),
            (&["*/png"], None),
            // … unless it holds no range at all.
            (&[""], Some("image/jpeg")),
            (&[" , ,"], Some("image/jpeg")),
            (&["image/png;;;=;x;q=0.9;=1"], Some("image/png")),
        ];
        for (values, want) in table {
            let h = headers(values);
            let got = Accept::of(&h).choose(&["image/jpeg", "image/png"], |r, m| r.covers(m));
            assert_eq!(got, *want, "Accept: {values:?}");
        }
    }

    const ELE: &str = "1.2.840.10008.1.2.1";

    /// WADO-RS instances: multipart `type` and `transfer-syntax`, quoted or not.
    #[test]
    fn reads_dicom_parameters() {
        let table: &[(&str, Option<&str>)] = &[
            ("multipart/related; type=\"application/dicom\"", Some(ELE)),
            (
                "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2",
                Some("1.2.840.10008.1.2"),
            ),
            (
                "multipart/related;type=application/dicom;transfer-syntax=\"1.2.840.10008.1.2\"",
                Some("1.2.840.10008.1.2"),
            ),
            (
                "Multipart/Related; TYPE=\"Application/DICOM\"; transfer-syntax=*",
                Some("*"),
            ),
            ("multipart/related", Some(ELE)),
            ("application/dicom", Some(ELE)),
            ("multipart/*", Some(ELE)),
            ("multipart/related; type=\"image/jpeg\"", None),
            (
                "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50",
                None,
            ),
            (
                "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50, \
                 multipart/related; type=\"application/dicom\"; transfer-syntax=*; q=0.5",
                Some("*"),
            ),
            // A weight among the parameters, not after them.
            (
                "multipart/related; q=0.9; type=\"application/dicom\"; transfer-syntax=*",
                Some("*"),
            ),
            // The more specific range decides, whatever its weight.
            (
                "*/*, multipart/related; type=\"application/dicom\"; q=0",
                None,
            ),
            (
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*; q=0.2, \
                 multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1; q=0",
                Some("*"),
            ),
        ];
        for (accept, want) in table {
            let offers = [ELE, "1.2.840.10008.1.2", "*"];
            let got = Accept::parse([*accept]).choose(&offers, |r, ts| {
                r.takes_part("application/dicom", "application/dicom")
                    && r.param("transfer-syntax").unwrap_or(ELE) == *ts
            });
            assert_eq!(got, *want, "Accept: {accept}");
        }
    }

    #[test]
    fn json_for_qido_and_metadata() {
        let table: &[(&[&str], bool)] = &[
            (&[], true),
            (&["application/dicom+json"], true),
            (&["Application/DICOM+JSON; charset=utf-8"], true),
            (&["application/xml, application/json;q=0.5"], true),
            (&["application/*"], true),
            (&["*/*"], true),
            (&["application/xml", "application/dicom+json"], true),
            (&["application/xml"], false),
            (&["application/dicom+xml"], false),
            (&["application/dicom+json;q=0"], false),
            (&["application/dicom+json; q=0.000"], false),
            (&["*/*, application/dicom+json;q=0"], false),
            (&["multipart/related; type=\"application/dicom\""], false),
        ];
        for (values, ok) in table {
            let got = require_json(&headers(values), "the search");
            assert_eq!(got.is_ok(), *ok, "Accept: {values:?}: {got:?}");
            if let Err(WebError::NotAcceptable(m)) = got {
                assert!(m.contains(values[0]) && m.contains(DICOM_JSON), "{m}");
            }
        }
    }

    #[test]
    fn hostile_input_is_bounded() {
        let many = "image/gif, ".repeat(10_000) + "image/png";
        let accept = Accept::parse([many.as_str()]);
        assert_eq!(accept.ranges.len(), MAX_RANGES);
        // Past the cap ranges are not read: image/png is not there.
        assert_eq!(accept.choose(&["image/png"], |r, m| r.covers(m)), None);
        // Bytes that are hard to split: no panic, at most MAX_RANGES.
        let alphabet: Vec<char> = "/;,=\"\\ *qa0.1\té\u{0}".chars().collect();
        let mut seed = 1u64;
        for _ in 0..2000 {
            let s: String = (0..(seed % 97))
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            let accept = Accept::parse([s.as_str(), s.as_str()]);
            assert!(accept.ranges.len() <= MAX_RANGES);
            let _ = accept.choose(&["a/b", "*/*"], |r, m| {
                r.takes_part(m, "x/y") && r.param("transfer-syntax") != Some("*")
            });
            let _ = accept.refuse("nothing");
        }
    }
}
