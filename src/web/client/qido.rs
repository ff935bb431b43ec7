//! QIDO-RS: one page of a search. The caller pages (offset/limit) until a
//! page comes back shorter than asked, so nothing is truncated silently.

use super::{read_limited, UpstreamClient, UpstreamError};
use super::{DICOM_JSON, MAX_RESPONSE_BODY};
use dicom_object::InMemDicomObject;
use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use serde_json::{Map, Value};
use std::time::Instant;

impl UpstreamClient {
    /// GET `{url}/{path}?{params}&offset=..&limit=..` and the matches of
    /// that page. `limit == 0` sends no limit (the origin's own default and
    /// cap then apply). 204 or an empty body is an empty page.
    ///
    /// Elements the DICOM JSON reader cannot take (bulk data given by URI,
    /// malformed values) are left out of the match rather than failing the
    /// page: a C-FIND answer without one odd attribute beats no answer.
    pub async fn qido_page(
        &self,
        path: &str,
        params: &[(String, String)],
        offset: usize,
        limit: usize,
    ) -> Result<Vec<InMemDicomObject>, UpstreamError> {
        let url = qido_url(&self.base, path, params, offset, limit);
        let started = Instant::now();
        let req = self
            .request(reqwest::Method::GET, &url)
            .header(ACCEPT, DICOM_JSON);
        let (resp, _turn) = self.get_ok(req, &url, self.request_timeout).await?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        // One byte more than allowed tells "too big" from "just fits".
        let body = read_limited(resp, MAX_RESPONSE_BODY + 1)
            .await
            .map_err(|e| self.transport_error(&url, e, self.request_timeout))?;
        if body.len() > MAX_RESPONSE_BODY {
            return Err(UpstreamError::BadResponse {
                url,
                message: format!(
                    "QIDO-RS page larger than {} MiB: ask for fewer results per page",
                    MAX_RESPONSE_BODY >> 20
                ),
            });
        }
        let matches = parse_qido_body(&body)
            .map_err(|message| UpstreamError::BadResponse { url, message })?;
        // Paths and parameters may carry patient data: not logged here.
        tracing::debug!(
            matches = matches.len(),
            offset,
            limit,
            ms = started.elapsed().as_millis() as u64,
            "QIDO-RS answered"
        );
        Ok(matches)
    }
}

/// `{base}/{path}?k=v&...&offset=&limit=`, keys and values escaped only
/// where they must be (see [`escape_query`]).
fn qido_url(
    base: &str,
    path: &str,
    params: &[(String, String)],
    offset: usize,
    limit: usize,
) -> String {
    let mut url = format!("{base}/{}", path.trim_start_matches('/'));
    let mut sep = '?';
    let paging = [
        ("offset".to_owned(), offset.to_string()),
        ("limit".to_owned(), limit.to_string()),
    ];
    let paging = if limit == 0 {
        &paging[..1]
    } else {
        &paging[..]
    };
    for (k, v) in params.iter().chain(paging) {
        url.push(sep);
        escape_query(k, &mut url);
        url.push('=');
        escape_query(v, &mut url);
        sep = '&';
    }
    url
}

/// Percent-encodes only what a query component cannot carry as is: bytes
/// outside the WHATWG/`http` query set, the separators `&` `=` `#`, `+`
/// (form decoders read it as a space), `%` itself, and `'` (the url crate
/// under reqwest would escape it anyway). Everything else,
/// notably the matching characters `*` `?` `^` `\` `,`, goes raw: Orthanc
/// 1.10 does not percent-decode query arguments at all (`PatientID=A%2A`
/// matches the literal "A%2A"), and a decoding server reads raw
/// characters the same.
fn escape_query(s: &str, out: &mut String) {
    for b in s.bytes() {
        let raw = matches!(b, 0x21 | 0x24 | 0x28..=0x2A | 0x2C..=0x3B | 0x3F..=0x7E);
        if raw {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A QIDO-RS body: a JSON array of DICOM JSON objects (PS3.18 F.2).
fn parse_qido_body(body: &[u8]) -> Result<Vec<InMemDicomObject>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("QIDO-RS body is not JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err("QIDO-RS body is not a JSON array".into());
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(map) => Ok(parse_object(map)),
            _ => Err(format!("QIDO-RS match {i} is not a JSON object")),
        })
        .collect()
}

/// One data set, leaving out what dicom-json refuses. Bulk data elements go
/// first: dicom-json would skip them anyway, with a warning each.
fn parse_object(mut map: Map<String, Value>) -> InMemDicomObject {
    clean(&mut map);
    match dicom_json::from_value::<InMemDicomObject>(Value::Object(map.clone())) {
        Ok(obj) => obj,
        Err(_) => {
            // Slow path: keep the elements that parse on their own.
            let mut kept = Map::new();
            for (tag, element) in map {
                let one = Map::from_iter([(tag.clone(), element.clone())]);
                match dicom_json::from_value::<InMemDicomObject>(Value::Object(one)) {
                    Ok(_) => {
                        kept.insert(tag, element);
                    }
                    // The tag only: values may be patient data.
                    Err(e) => tracing::debug!(%tag, error = %e, "dropped a QIDO-RS attribute"),
                }
            }
            dicom_json::from_value(Value::Object(kept))
                .unwrap_or_else(|_| InMemDicomObject::new_empty())
        }
    }
}

/// Drops bulk data elements and turns `null` person names into empty ones
/// (dicom-json wants an object), in sequences too.
fn clean(map: &mut Map<String, Value>) {
    map.retain(|_, element| {
        element
            .as_object()
            .is_none_or(|e| !e.contains_key("BulkDataURI"))
    });
    for element in map.values_mut() {
        let Some(element) = element.as_object_mut() else {
            continue;
        };
        let vr = element.get("vr").and_then(Value::as_str).unwrap_or("");
        let is_pn = vr == "PN";
        let is_sq = vr == "SQ";
        let Some(Value::Array(values)) = element.get_mut("Value") else {
            continue;
        };
        for v in values {
            match v {
                Value::Null if is_pn => *v = Value::Object(Map::new()),
                Value::Object(item) if is_sq => clean(item),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::client::tests::{canned, config, http_response};
    use dicom_core::header::HasLength;
    use dicom_dictionary_std::tags;

    fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
        obj.element(tag).unwrap().to_str().unwrap().into_owned()
    }

    #[test]
    fn url_encodes_values_and_appends_paging() {
        let params = vec![
            ("PatientName".to_owned(), "Doe^J* O'Neil".to_owned()),
            ("00100020".to_owned(), "A&B=C?".to_owned()),
            ("includefield".to_owned(), "00081030".to_owned()),
        ];
        assert_eq!(
            qido_url("http://h/dw", "/studies", &params, 20, 10),
            "http://h/dw/studies?PatientName=Doe^J*%20O%27Neil&00100020=A%26B%3DC?\
             &includefield=00081030&offset=20&limit=10"
        );
        let mut s = String::new();
        escape_query("a+b%c#d\"e<f>g\\h,i/j:k\u{e9}", &mut s);
        assert_eq!(s, "a%2Bb%25c%23d%22e%3Cf%3Eg\\h,i/j:k%C3%A9");
        assert_eq!(
            qido_url("http://h/dw", "studies/1.2/series", &[], 0, 0),
            "http://h/dw/studies/1.2/series?offset=0"
        );
    }

    #[test]
    fn parses_orthanc_style_json() {
        // As Orthanc 1.10 sends it: PN as objects, IS as numbers, a
        // retrieve URL, plus what dicom-json alone would choke on.
        let body = br#"[{
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00100020": {"vr": "LO", "Value": ["P1"]},
            "00201208": {"vr": "IS", "Value": [20]},
            "00081190": {"vr": "UR", "Value": ["http://x/studies/1.2"]},
            "00080090": {"vr": "PN", "Value": [null]},
            "00081030": {"vr": "LO"},
            "7FE00010": {"vr": "OW", "BulkDataURI": "http://x/bulk"},
            "00091010": {"vr": "UN", "Value": ["bad"]},
            "00081110": {"vr": "SQ", "Value": [{
                "00081150": {"vr": "UI", "Value": ["1.2.3"]},
                "00420011": {"vr": "OB", "BulkDataURI": "http://x/b2"}
            }]}
        }, {}]"#;
        let got = parse_qido_body(body).unwrap();
        assert_eq!(got.len(), 2);
        let o = &got[0];
        assert_eq!(text(o, tags::PATIENT_NAME), "Doe^Jane");
        assert_eq!(text(o, tags::PATIENT_ID), "P1");
        assert_eq!(text(o, tags::NUMBER_OF_STUDY_RELATED_INSTANCES), "20");
        assert_eq!(text(o, tags::REFERRING_PHYSICIAN_NAME), "");
        assert!(o.element(tags::STUDY_DESCRIPTION).unwrap().is_empty());
        assert!(o.element(tags::PIXEL_DATA).is_err());
        assert!(o.element(dicom_core::Tag(0x0009, 0x1010)).is_err());
        let seq = o.element(tags::REFERENCED_STUDY_SEQUENCE).unwrap();
        let items = seq.items().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(text(&items[0], tags::REFERENCED_SOP_CLASS_UID), "1.2.3");
        assert_eq!(items[0].iter().count(), 1);
        assert_eq!(got[1].iter().count(), 0);
        assert_eq!(o.iter().count(), 7);
    }

    #[test]
    fn empty_and_bad_bodies() {
        assert!(parse_qido_body(b"").unwrap().is_empty());
        assert!(parse_qido_body(b" \n").unwrap().is_empty());
        assert!(parse_qido_body(b"[]").unwrap().is_empty());
        assert!(parse_qido_body(b"{}").is_err());
        assert!(parse_qido_body(b"[1]").is_err());
        assert!(parse_qido_body(b"<html>").is_err());
    }

    #[tokio::test]
    async fn request_shape_and_no_content() {
        let (url, server) = canned(http_response("204 No Content", "", "")).await;
        let client = UpstreamClient::new(&config(&url, "")).unwrap();
        let params = vec![("PatientID".to_owned(), "P 1*".to_owned())];
        let got = client.qido_page("studies", &params, 4, 2).await.unwrap();
        assert!(got.is_empty());
        let req = String::from_utf8(server.await.unwrap())
            .unwrap()
            .to_lowercase();
        assert!(
            req.starts_with("get /dicom-web/studies?patientid=p%201*&offset=4&limit=2 http/1.1"),
            "{req}"
        );
        assert!(req.contains("accept: application/dicom+json\r\n"), "{req}");
    }

    #[tokio::test]
    async fn errors_carry_status_and_body() {
        let (url, server) = canned(http_response(
            "400 Bad Request",
            "",
            "{\"Details\": \"Unknown tag\"}",
        ))
        .await;
        let client = UpstreamClient::new(&config(&url, "")).unwrap();
        let err = client.qido_page("studies", &[], 0, 10).await.unwrap_err();
        match err {
            UpstreamError::Status {
                status, message, ..
            } => {
                assert_eq!(status, 400);
                assert!(message.contains("Unknown tag"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        server.await.unwrap();

        let (url, server) = canned(http_response("200 OK", "", "not json")).await;
        let client = UpstreamClient::new(&config(&url, "")).unwrap();
        let err = client.qido_page("studies", &[], 0, 10).await.unwrap_err();
        assert!(matches!(err, UpstreamError::BadResponse { .. }), "{err:?}");
        server.await.unwrap();
    }
}
