//! Streaming multipart/related: the writer, and what reading with multer
//! needs (the Content-Type's parameters, a poll budget).
//!
//! The body is produced part by part from open files in 64 KiB chunks, so
//! memory stays bounded whatever the size of the instances. Every part
//! carries Content-Length (some origins need it), and the total length is
//! known in advance so the request need not be chunked.

use bytes::Bytes;
use futures::{stream, Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

const CHUNK: usize = 64 * 1024;
/// Reads of a response's file parts: each read is a hop to tokio's blocking
/// pool, so fewer, larger reads (a typical instance in one).
const FILE_CHUNK: usize = 1024 * 1024;

/// One part whose content is read from an already opened file.
pub struct FilePart {
    pub content_type: &'static str,
    pub file: tokio::fs::File,
    /// Exactly this many bytes are sent (the file is not read further).
    pub len: u64,
}

/// A fresh boundary; random so it cannot occur inside the DICOM payloads
/// (a collision would need 128 random bits to match).
pub fn new_boundary() -> String {
    format!("pons-{}", uuid::Uuid::new_v4().simple())
}

/// `multipart/related; type="..."; boundary=...` for the request header.
pub fn related_content_type(part_type: &str, boundary: &str) -> String {
    format!("multipart/related; type=\"{part_type}\"; boundary={boundary}")
}

fn part_header(boundary: &str, content_type: &str, len: u64) -> Bytes {
    Bytes::from(format!(
        "--{boundary}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n"
    ))
}

fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("--{boundary}--\r\n"))
}

const CRLF: &[u8] = b"\r\n";

/// Total body length for these parts.
pub fn body_len(boundary: &str, parts: &[FilePart]) -> u64 {
    parts
        .iter()
        .map(|p| part_header(boundary, p.content_type, p.len).len() as u64 + p.len + 2)
        .sum::<u64>()
        + closing(boundary).len() as u64
}

/// The whole body as a stream of chunks.
pub fn body_stream(
    boundary: String,
    parts: Vec<FilePart>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let end = closing(&boundary);
    stream::iter(parts)
        .flat_map(move |p| {
            let head = part_header(&boundary, p.content_type, p.len);
            stream::once(async move { Ok(head) })
                .chain(ReaderStream::with_capacity(p.file.take(p.len), CHUNK))
                .chain(stream::once(async { Ok(Bytes::from_static(CRLF)) }))
        })
        .chain(stream::once(async move { Ok(end) }))
}

/// The content of one part of a body made as it goes.
pub enum PartBody {
    /// This many bytes of an opened file.
    File(tokio::fs::File, u64),
    Bytes(Bytes),
}

pub struct Part {
    pub content_type: String,
    pub body: PartBody,
}

/// A multipart/related body whose parts are produced while it is sent (a
/// response that starts before its last part exists). An error item ends
/// the body there: the receiver sees it truncated, never a false end.
pub fn streamed_body<S>(
    boundary: String,
    parts: S,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static
where
    S: Stream<Item = std::io::Result<Part>> + Send + 'static,
{
    let end = closing(&boundary);
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed_in = failed.clone();
    parts
        .scan((), move |_, part| {
            // Nothing after an error, not even the closing boundary.
            if failed_in.load(std::sync::atomic::Ordering::Relaxed) {
                return futures::future::ready(None);
            }
            if part.is_err() {
                failed_in.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            futures::future::ready(Some(part))
        })
        .map(move |part| match part {
            Err(e) => stream::once(async { Err(e) }).boxed(),
            Ok(Part { content_type, body }) => {
                let (len, content) = match body {
                    PartBody::File(f, len) => (
                        len,
                        ReaderStream::with_capacity(f.take(len), FILE_CHUNK).boxed(),
                    ),
                    PartBody::Bytes(b) => (b.len() as u64, stream::once(async { Ok(b) }).boxed()),
                };
                let head = part_header(&boundary, &content_type, len);
                stream::once(async move { Ok(head) })
                    .chain(content)
                    .chain(stream::once(async { Ok(Bytes::from_static(CRLF)) }))
                    .boxed()
            }
        })
        .flatten()
        .chain(stream::once(async move { Ok(end) }).filter(move |_| {
            futures::future::ready(!failed.load(std::sync::atomic::Ordering::Relaxed))
        }))
}

/// multer drains its input until it is pending before handing out data; a
/// fast peer could thus land a whole body in memory. Yielding after this
/// many bytes bounds what one poll buffers.
pub const POLL_BUDGET: usize = 256 * 1024;

/// The parameters of a `multipart/related` Content-Type (names lower-cased,
/// values unquoted), or None for any other type.
pub fn related_params(content_type: &str) -> Option<Vec<(String, String)>> {
    match content_type.parse::<mime::Mime>() {
        Ok(mime) => {
            if mime.type_() != mime::MULTIPART || mime.subtype().as_str() != "related" {
                return None;
            }
            Some(
                mime.params()
                    .map(|(n, v)| (n.as_str().to_ascii_lowercase(), v.as_str().to_owned()))
                    .collect(),
            )
        }
        // mime refuses `type=application/dicom` unquoted ('/' is not a token
        // character), which peers do send: read the header leniently.
        Err(_) => {
            let (essence, params) = content_type.split_once(';')?;
            if !essence.trim().eq_ignore_ascii_case("multipart/related") {
                return None;
            }
            Some(lenient_params(params))
        }
    }
}

/// The boundary of a `multipart/related` Content-Type (quoted or not).
pub fn related_boundary(content_type: &str) -> Option<String> {
    related_params(content_type)?
        .into_iter()
        .find(|(name, _)| name == "boundary")
        .map(|(_, v)| v)
        .filter(|b| !b.is_empty())
}

/// `; name=value; name="quoted \" value"` pairs, as far as they make sense.
fn lenient_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ';' || c.is_whitespace()).is_some() {}
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ';')).collect();
        if name.is_empty() && chars.peek().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
                while chars.next_if(|c| *c != ';').is_some() {}
            } else {
                value = std::iter::from_fn(|| chars.next_if(|c| *c != ';')).collect();
            }
        }
        out.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// Passes a byte stream through, but reports Pending (and asks to be polled
/// again at once) after every `budget` bytes; see [`POLL_BUDGET`].
pub struct YieldEvery<S> {
    inner: S,
    budget: usize,
    since_yield: usize,
}

impl<S> YieldEvery<S> {
    pub fn new(inner: S, budget: usize) -> Self {
        YieldEvery {
            inner,
            budget,
            since_yield: 0,
        }
    }
}

impl<S, E> Stream for YieldEvery<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.since_yield >= this.budget {
            this.since_yield = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let polled = Pin::new(&mut this.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(b))) => this.since_yield += b.len(),
            Poll::Pending => this.since_yield = 0,
            Poll::Ready(_) => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn part(dir: &std::path::Path, name: &str, content: &[u8]) -> FilePart {
        let path = dir.join(name);
        tokio::fs::write(&path, content).await.unwrap();
        FilePart {
            content_type: "application/dicom",
            file: tokio::fs::File::open(&path).await.unwrap(),
            len: content.len() as u64,
        }
    }

    #[tokio::test]
    async fn multer_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        // A payload bigger than one chunk, containing CRLF and dashes.
        let big: Vec<u8> = (0..200_000u32)
            .map(|i| b"\r\n--x"[(i % 5) as usize])
            .collect();
        let contents = [big.as_slice(), b"", b"DICM small"];
        let mut parts = Vec::new();
        for (i, c) in contents.iter().enumerate() {
            parts.push(part(dir.path(), &format!("{i}.dcm"), c).await);
        }
        let boundary = new_boundary();
        let expected_len = body_len(&boundary, &parts);
        let body: Vec<Bytes> = body_stream(boundary.clone(), parts)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert!(body.iter().all(|b| b.len() <= CHUNK + 200));
        let total: usize = body.iter().map(Bytes::len).sum();
        assert_eq!(total as u64, expected_len);

        let input = stream::iter(body.into_iter().map(Ok::<_, std::io::Error>));
        let mut mp = multer::Multipart::new(input, boundary);
        let mut seen = Vec::new();
        while let Some(field) = mp.next_field().await.unwrap() {
            assert_eq!(
                field.content_type().map(|m| m.essence_str().to_owned()),
                Some("application/dicom".to_owned())
            );
            let len: usize = field.headers()["content-length"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let data = field.bytes().await.unwrap();
            assert_eq!(len, data.len());
            seen.push(data.to_vec());
        }
        assert_eq!(
            seen,
            contents.iter().map(|c| c.to_vec()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn content_type_names_the_part_type() {
        assert_eq!(
            related_content_type("application/dicom", "b1"),
            "multipart/related; type=\"application/dicom\"; boundary=b1"
        );
    }

    #[test]
    fn boundary_of_related_types_only() {
        assert_eq!(
            related_boundary("multipart/related; type=\"application/dicom\"; boundary=abc-1"),
            Some("abc-1".into())
        );
        assert_eq!(
            related_boundary("Multipart/Related; boundary=\"q d\"; type=application/dicom"),
            Some("q d".into())
        );
        assert_eq!(
            related_boundary("multipart/related; type=application/dicom"),
            None
        );
        assert_eq!(related_boundary("multipart/form-data; boundary=x"), None);
        assert_eq!(related_boundary("application/dicom+json"), None);
        assert_eq!(related_boundary(""), None);
        let params =
            related_params("multipart/related; type=application/dicom; boundary=x").unwrap();
        assert_eq!(
            params,
            vec![
                ("type".to_owned(), "application/dicom".to_owned()),
                ("boundary".to_owned(), "x".to_owned())
            ]
        );
        let params = related_params("multipart/related; Type=\"application/dicom+json\"").unwrap();
        assert_eq!(
            params,
            vec![("type".to_owned(), "application/dicom+json".to_owned())]
        );
    }

    /// A body that is always ready (as from a fast origin) still comes out in
    /// chunks of about the budget: nothing buffers a whole part.
    #[tokio::test]
    async fn always_ready_body_is_read_in_bounded_chunks() {
        let payload_len = 16 * 1024 * 1024;
        let boundary = "bb";
        let mut pieces = vec![Bytes::from(format!(
            "--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"
        ))];
        let mut sent = 0;
        while sent < payload_len {
            let n = CHUNK.min(payload_len - sent);
            pieces.push(Bytes::from(vec![(sent / CHUNK) as u8; n]));
            sent += n;
        }
        pieces.push(Bytes::from(format!("\r\n--{boundary}--\r\n")));
        let input = stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
        let body = YieldEvery::new(input, POLL_BUDGET);
        let mut mp = multer::Multipart::new(body, boundary);
        let mut field = mp.next_field().await.unwrap().unwrap();
        let (mut total, mut largest) = (0, 0);
        while let Some(c) = field.chunk().await.unwrap() {
            total += c.len();
            largest = largest.max(c.len());
        }
        assert_eq!(total, payload_len);
        // What next_field buffered plus one budget, whatever the part's size.
        assert!(
            largest <= 2 * (POLL_BUDGET + CHUNK),
            "a chunk of {largest} bytes"
        );
    }
}
