//! Streaming multipart/related writer (and later reader).
//!
//! The body is produced part by part from open files in 64 KiB chunks, so
//! memory stays bounded whatever the size of the instances. Every part
//! carries Content-Length (some origins need it), and the total length is
//! known in advance so the request need not be chunked.

use bytes::Bytes;
use futures::{stream, Stream, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

const CHUNK: usize = 64 * 1024;

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
                    PartBody::File(f, len) => {
                        (len, ReaderStream::with_capacity(f.take(len), CHUNK).boxed())
                    }
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
}
