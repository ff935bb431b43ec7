//! Reading multipart/related answers (WADO-RS) in tests.

use super::HttpResponse;
use pons::dicom::part10::split_part10_header;

/// One part of a multipart/related body.
pub struct Part {
    pub content_type: String,
    pub data: Vec<u8>,
}

impl Part {
    pub fn transfer_syntax(&self) -> &str {
        self.content_type
            .split("transfer-syntax=")
            .nth(1)
            .unwrap_or("")
            .trim()
    }
    /// The data set bytes (after preamble, DICM and file meta).
    pub fn data_set(&self) -> &[u8] {
        let (at, _) = split_part10_header(&self.data).expect("part is PS3.10");
        &self.data[at..]
    }
    pub fn sop(&self) -> String {
        split_part10_header(&self.data).unwrap().1.sop_instance_uid
    }
}

/// Splits a multipart/related answer; every part must carry a right
/// Content-Length.
pub fn parts(rsp: &HttpResponse) -> Vec<Part> {
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let ct = rsp.header("content-type").unwrap();
    assert!(ct.starts_with("multipart/related"), "{ct}");
    let boundary = ct.split("boundary=").nth(1).unwrap().trim_matches('"');
    let delim = format!("--{boundary}");
    let body = &rsp.body;
    let mut out = Vec::new();
    let mut pos = find(body, delim.as_bytes(), 0).expect("first boundary");
    loop {
        pos += delim.len();
        if body[pos..].starts_with(b"--") {
            return out;
        }
        pos += 2; // CRLF
        let head_end = find(body, b"\r\n\r\n", pos).unwrap();
        let head = String::from_utf8_lossy(&body[pos..head_end]).to_string();
        let header = |n: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(n)
                        .then(|| v.trim().to_owned())
                })
                .unwrap_or_else(|| panic!("part without {n}: {head}"))
        };
        let len: usize = header("content-length").parse().unwrap();
        let start = head_end + 4;
        let data = body[start..start + len].to_vec();
        assert_eq!(&body[start + len..start + len + 2], b"\r\n");
        assert!(body[start + len + 2..].starts_with(delim.as_bytes()));
        out.push(Part {
            content_type: header("content-type"),
            data,
        });
        pos = start + len + 2;
    }
}

pub fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A multipart/related body of (Content-Type, bytes) parts, held in memory
/// (small cases only).
pub fn related_body(boundary: &str, parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (content_type, bytes) in parts {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// A STOW-RS body of PS3.10 `parts`.
pub fn dicom_body(boundary: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let typed: Vec<(&str, Vec<u8>)> = parts
        .iter()
        .map(|p| ("application/dicom", p.clone()))
        .collect();
    related_body(boundary, &typed)
}
