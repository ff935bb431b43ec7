use super::*;
use crate::web::client::tests::{canned, config, http_response};
use tokio::io::AsyncReadExt;

/// A small PS3.10 file (all bytes ASCII, so it fits a canned String body).
fn part10(instance: &str, data_set: &[u8]) -> Vec<u8> {
    let mut meta = Vec::new();
    for (elem, value) in [
        (0x0002u16, "1.2.840.10008.5.1.4.1.1.7"),
        (0x0003, instance),
        (0x0010, "1.2.840.10008.1.2.1"),
    ] {
        let mut v = value.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        meta.extend_from_slice(&[0x02, 0x00]);
        meta.extend_from_slice(&elem.to_le_bytes());
        meta.extend_from_slice(b"UI");
        meta.extend_from_slice(&(v.len() as u16).to_le_bytes());
        meta.extend_from_slice(&v);
    }
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[0x02, 0, 0, 0, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(data_set);
    out
}

fn multipart_body(boundary: &str, parts: &[(&str, Vec<u8>)]) -> String {
    let mut body = Vec::new();
    for (content_type, bytes) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    String::from_utf8(body).unwrap()
}

#[tokio::test]
async fn reads_parts_as_meta_then_data_set() {
    let b = "bnd-7";
    let ds1 = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100".to_vec();
    let ds2: Vec<u8> = (0..3000u32)
        .map(|i| b"\r\n--bnd-"[(i % 8) as usize])
        .collect();
    let body = multipart_body(
        b,
        &[
            (
                "application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
                part10("1.2.3.1", &ds1),
            ),
            ("application/dicom", part10("1.2.3.22", &ds2)),
        ],
    );
    let headers =
        format!("Content-Type: multipart/related; type=\"application/dicom\"; boundary={b}\r\n");
    let (url, server) = canned(http_response("200 OK", &headers, &body)).await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    let mut parts = client
        .retrieve("studies/1.2/series/1.3", None)
        .await
        .unwrap();

    let mut p = parts.next_part().await.unwrap().unwrap();
    assert_eq!(p.transfer_syntax().as_deref(), Some("1.2.840.10008.1.2.1"));
    let meta = p.file_meta().await.unwrap();
    assert_eq!(meta.sop_instance_uid, "1.2.3.1");
    assert_eq!(meta.sop_class_uid, "1.2.840.10008.5.1.4.1.1.7");
    assert_eq!(meta.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    let mut got = Vec::new();
    while let Some(c) = p.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(got, ds1);
    drop(p);

    let mut p = parts.next_part().await.unwrap().unwrap();
    assert_eq!(p.content_type().as_deref(), Some("application/dicom"));
    assert_eq!(p.transfer_syntax(), None);
    assert_eq!(p.file_meta().await.unwrap().sop_instance_uid, "1.2.3.22");
    let mut got = Vec::new();
    p.into_async_read().read_to_end(&mut got).await.unwrap();
    assert_eq!(got, ds2);

    assert!(parts.next_part().await.unwrap().is_none());
    assert!(parts.next_part().await.unwrap().is_none());
    let req = String::from_utf8(server.await.unwrap())
        .unwrap()
        .to_lowercase();
    assert!(
        req.starts_with("get /dicom-web/studies/1.2/series/1.3 http/1.1"),
        "{req}"
    );
    assert!(
        req.contains(
            "accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*\r\n"
        ),
        "{req}"
    );
}

#[tokio::test]
async fn dropped_part_is_skipped() {
    let b = "b";
    let body = multipart_body(
        b,
        &[
            ("application/dicom", part10("1.1", &[b'x'; 5000])),
            ("application/dicom", part10("1.2", b"")),
        ],
    );
    let headers = format!("Content-Type: multipart/related; boundary={b}\r\n");
    let (url, server) = canned(http_response("200 OK", &headers, &body)).await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    let mut parts = client
        .retrieve("studies/1", Some("1.2.840.10008.1.2.4.50"))
        .await
        .unwrap();
    let mut p = parts.next_part().await.unwrap().unwrap();
    p.chunk().await.unwrap().unwrap();
    drop(p);
    let mut p = parts.next_part().await.unwrap().unwrap();
    assert_eq!(p.file_meta().await.unwrap().sop_instance_uid, "1.2");
    assert_eq!(p.chunk().await.unwrap(), None);
    drop(p);
    assert!(parts.next_part().await.unwrap().is_none());
    let req = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(
        req.contains("; transfer-syntax=1.2.840.10008.1.2.4.50\r\n"),
        "{req}"
    );
}

#[tokio::test]
async fn not_part10_is_a_bad_response() {
    let body = multipart_body("b", &[("application/dicom", b"hello".to_vec())]);
    let headers = "Content-Type: multipart/related; boundary=b\r\n";
    let (url, server) = canned(http_response("200 OK", headers, &body)).await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    let mut parts = client.retrieve("studies/1", None).await.unwrap();
    let mut p = parts.next_part().await.unwrap().unwrap();
    let err = p.file_meta().await.unwrap_err();
    assert!(matches!(err, UpstreamError::BadResponse { .. }), "{err:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn truncated_body_is_an_error_not_a_short_part() {
    // The closing boundary never comes.
    let mut body = multipart_body("b", &[("application/dicom", part10("1.1", &[b'x'; 4000]))]);
    body.truncate(body.len() - 100);
    let headers = "Content-Type: multipart/related; boundary=b\r\n";
    let (url, server) = canned(http_response("200 OK", headers, &body)).await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    let mut parts = client.retrieve("studies/1", None).await.unwrap();
    let mut p = parts.next_part().await.unwrap().unwrap();
    // multer reports the missing boundary as soon as it sees the end.
    let mut result = p.file_meta().await.map(|_| None);
    for _ in 0..10 {
        if result.is_err() {
            break;
        }
        result = p.chunk().await;
    }
    assert!(
        matches!(result, Err(UpstreamError::BadResponse { .. })),
        "{result:?}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn status_and_content_type_errors() {
    let (url, server) = canned(http_response(
        "404 Not Found",
        "",
        "{\"Message\": \"Unknown resource\"}",
    ))
    .await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    match client.retrieve("studies/9.9", None).await {
        Err(UpstreamError::Status {
            status: 404,
            message,
            ..
        }) => {
            assert!(message.contains("Unknown resource"), "{message}")
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("404 accepted"),
    }
    server.await.unwrap();

    let (url, server) = canned(http_response(
        "200 OK",
        "Content-Type: application/dicom+json\r\n",
        "[]",
    ))
    .await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    assert!(matches!(
        client.retrieve("studies/9.9", None).await,
        Err(UpstreamError::BadResponse { .. })
    ));
    server.await.unwrap();

    let client = UpstreamClient::new(&config("http://127.0.0.1:9/", "")).unwrap();
    assert!(matches!(
        client.retrieve("studies/1", Some("1.2\r\nX: y")).await,
        Err(UpstreamError::Config(_))
    ));
}
