//! QIDO-RS paging and WADO-RS streaming retrieve against a real Orthanc
//! (with its DICOMweb plugin), loaded over DIMSE with storescu.

mod common;
use common::*;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pons::dicom::part10::split_part10_header;
use pons::web::client::{UpstreamClient, UpstreamError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const JPEG_2000: &str = "1.2.840.10008.1.2.4.91";
const CT_PATIENT: &str = "PONS-CT-200-0";

fn client(orthanc: &Orthanc) -> UpstreamClient {
    let cfg: pons::config::UpstreamConfig = toml::from_str(&format!(
        "url = \"{}/\"\nrequest_timeout_secs = 60",
        orthanc.dicomweb_url()
    ))
    .unwrap();
    UpstreamClient::new(&cfg).unwrap()
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        .unwrap_or_default()
}

/// Every page of a search: the page sizes and all matches.
async fn all_pages(
    client: &UpstreamClient,
    path: &str,
    params: &[(String, String)],
    limit: usize,
) -> (Vec<usize>, Vec<InMemDicomObject>) {
    let (mut sizes, mut all) = (Vec::new(), Vec::new());
    loop {
        let page = client
            .qido_page(path, params, all.len(), limit)
            .await
            .unwrap_or_else(|e| panic!("QIDO {path}: {e}"));
        sizes.push(page.len());
        let last = page.len() < limit;
        all.extend(page);
        if last {
            return (sizes, all);
        }
    }
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The data set bytes of a PS3.10 file (after its meta group).
fn data_set(file: &[u8]) -> &[u8] {
    let (at, _) = split_part10_header(file).expect("a PS3.10 file");
    &file[at..]
}

struct Retrieved {
    /// SOP Instance UID → (transfer syntax, data set bytes).
    instances: BTreeMap<String, (String, Vec<u8>)>,
    largest_chunk: usize,
}

async fn retrieve_all(client: &UpstreamClient, path: &str, ts: Option<&str>) -> Retrieved {
    let mut parts = client
        .retrieve(path, ts)
        .await
        .unwrap_or_else(|e| panic!("retrieve {path}: {e}"));
    let mut out = Retrieved {
        instances: BTreeMap::new(),
        largest_chunk: 0,
    };
    while let Some(mut part) = parts.next_part().await.unwrap() {
        let meta = part.file_meta().await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = part.chunk().await.unwrap() {
            out.largest_chunk = out.largest_chunk.max(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        let dup = out
            .instances
            .insert(meta.sop_instance_uid, (meta.transfer_syntax_uid, bytes));
        assert!(dup.is_none(), "an instance came twice");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qido_paging_and_wado_retrieve_against_orthanc() {
    let orthanc = Orthanc::start();
    let ct = testdata().ct(200);
    // Two series of the one CT study: slices 0-9 and 100-109.
    let series_a: Vec<&Instance> = ct.instances[0..10].iter().collect();
    let series_b: Vec<&Instance> = ct.instances[100..110].iter().collect();
    let sample = |name: &str| -> Instance {
        testdata()
            .samples
            .iter()
            .find(|s| s.path.file_name().is_some_and(|f| f == name))
            .unwrap_or_else(|| panic!("sample {name} missing"))
            .clone()
    };
    let jpeg = sample("SC_rgb_jpeg_dcmtk.dcm");
    assert_eq!(jpeg.transfer_syntax, JPEG_BASELINE);
    // Four more studies, one instance each: five studies in all.
    let others = ["CT_small.dcm", "CR1_6154.dcm", "MR1_4919.dcm"].map(sample);
    let mut files: Vec<PathBuf> = series_a
        .iter()
        .chain(&series_b)
        .map(|i| i.path.clone())
        .collect();
    files.push(jpeg.path.clone());
    files.extend(others.iter().map(|i| i.path.clone()));
    storescu("PONSTEST", orthanc.aet(), orthanc.dicom_port(), &files, &[]).assert_success();
    assert_eq!(
        orthanc.wait_for_instances(24, Duration::from_secs(30)),
        24,
        "Orthanc did not store every instance"
    );
    let client = client(&orthanc);

    // --- QIDO-RS paging -------------------------------------------------
    let (sizes, studies) = all_pages(&client, "studies", &[], 2).await;
    assert_eq!(sizes, vec![2, 2, 1], "pages of /studies with limit=2");
    let study_uids: BTreeSet<String> = studies
        .iter()
        .map(|s| text(s, tags::STUDY_INSTANCE_UID))
        .collect();
    assert_eq!(study_uids.len(), 5);
    let past_end = client.qido_page("studies", &[], 6, 2).await.unwrap();
    assert!(past_end.is_empty());
    let no_match = params(&[("PatientID", "NOBODY-*")]);
    assert!(client
        .qido_page("studies", &no_match, 0, 10)
        .await
        .unwrap()
        .is_empty());

    // Matching by PatientID, exact and with wildcards; PN values arrive
    // as {"Alphabetic": ..} and come out as plain strings.
    for pid in [CT_PATIENT, "PONS-CT-*", "PONS-CT-200-?"] {
        let found = client
            .qido_page(
                "studies",
                &params(&[("PatientID", pid), ("includefield", "00081030")]),
                0,
                10,
            )
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "PatientID={pid}");
        assert_eq!(text(&found[0], tags::PATIENT_ID), CT_PATIENT);
        assert_eq!(
            text(&found[0], tags::PATIENT_NAME),
            "Synthetic^Patient200^0"
        );
        assert_eq!(
            text(&found[0], tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
            "20"
        );
    }
    let ct_study = text(
        &client
            .qido_page("studies", &params(&[("PatientID", CT_PATIENT)]), 0, 1)
            .await
            .unwrap()[0],
        tags::STUDY_INSTANCE_UID,
    );
    let by_name = params(&[("PatientName", "Synthetic*"), ("StudyDate", "20240101-")]);
    let (_, found) = all_pages(&client, "studies", &by_name, 1).await;
    assert_eq!(found.len(), 1);
    assert_eq!(text(&found[0], tags::STUDY_INSTANCE_UID), ct_study);

    let series_path = format!("studies/{ct_study}/series");
    let (sizes, series) = all_pages(&client, &series_path, &[], 1).await;
    assert_eq!(sizes, vec![1, 1, 0], "pages of {series_path} with limit=1");
    let mut series_uids: Vec<String> = series
        .iter()
        .map(|s| text(s, tags::SERIES_INSTANCE_UID))
        .collect();
    series_uids.sort();
    assert_eq!(series_uids.len(), 2);
    assert_ne!(series_uids[0], series_uids[1]);

    // Which series is which: by their instances.
    let uids_a: BTreeSet<String> = series_a.iter().map(|i| i.sop_instance.clone()).collect();
    let uids_b: BTreeSet<String> = series_b.iter().map(|i| i.sop_instance.clone()).collect();
    let mut series_of = BTreeMap::new();
    for se in &series_uids {
        let path = format!("studies/{ct_study}/series/{se}/instances");
        let (sizes, found) = all_pages(&client, &path, &[], 4).await;
        assert_eq!(sizes, vec![4, 4, 2], "pages of instances with limit=4");
        let uids: BTreeSet<String> = found
            .iter()
            .map(|i| text(i, tags::SOP_INSTANCE_UID))
            .collect();
        assert!(uids == uids_a || uids == uids_b, "instances of {se}");
        series_of.insert(if uids == uids_a { "a" } else { "b" }, se.clone());
        // A matching key at instance level, with the patient's ID.
        let one = found[0].clone();
        let sop = text(&one, tags::SOP_INSTANCE_UID);
        let hit = client
            .qido_page(
                &path,
                &params(&[("SOPInstanceUID", &sop), ("PatientID", CT_PATIENT)]),
                0,
                10,
            )
            .await
            .unwrap();
        assert_eq!(hit.len(), 1);
        assert_eq!(text(&hit[0], tags::SOP_INSTANCE_UID), sop);
    }
    assert_eq!(series_of.len(), 2);

    // --- WADO-RS retrieve -----------------------------------------------
    // A series, as stored: exactly its instances, data sets byte-identical
    // to Orthanc's stored files.
    let series_b_uid = &series_of["b"];
    let got = retrieve_all(
        &client,
        &format!("studies/{ct_study}/series/{series_b_uid}"),
        None,
    )
    .await;
    assert_eq!(
        got.instances.keys().cloned().collect::<BTreeSet<_>>(),
        uids_b
    );
    for (uid, (ts, bytes)) in &got.instances {
        assert_eq!(ts, EXPLICIT_LE);
        let stored = orthanc.instance_file(uid);
        assert!(
            data_set(&stored) == bytes.as_slice(),
            "data set of {uid} differs from Orthanc's stored file"
        );
    }
    eprintln!(
        "series retrieve: {} parts, largest chunk {} bytes",
        got.instances.len(),
        got.largest_chunk
    );

    // The whole study: 20 parts, no chunk near the size of the response.
    let got = retrieve_all(&client, &format!("studies/{ct_study}"), Some("*")).await;
    assert_eq!(got.instances.len(), 20);
    let total: usize = got.instances.values().map(|(_, b)| b.len()).sum();
    eprintln!(
        "study retrieve: {} parts, {total} bytes, largest chunk {} bytes",
        got.instances.len(),
        got.largest_chunk
    );
    assert!(got.largest_chunk <= 1024 * 1024);

    // The JPEG baseline instance: as stored (no transfer syntax asked)...
    let (jpeg_study, jpeg_series) = {
        let found = client
            .qido_page(
                "instances",
                &params(&[
                    ("SOPInstanceUID", &jpeg.sop_instance),
                    ("includefield", "0020000E"),
                ]),
                0,
                1,
            )
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        (
            text(&found[0], tags::STUDY_INSTANCE_UID),
            text(&found[0], tags::SERIES_INSTANCE_UID),
        )
    };
    let jpeg_path = format!(
        "studies/{jpeg_study}/series/{jpeg_series}/instances/{}",
        jpeg.sop_instance
    );
    let stored = orthanc.instance_file(&jpeg.sop_instance);
    let as_stored = retrieve_all(&client, &jpeg_path, None).await;
    let (ts, bytes) = &as_stored.instances[&jpeg.sop_instance];
    assert_eq!(ts, JPEG_BASELINE);
    assert!(data_set(&stored) == bytes.as_slice());

    // Without a transfer-syntax parameter, Orthanc transcodes to Explicit VR
    // Little Endian (the PS3.18 default): why the client always sends one.
    let url = format!("{}/{jpeg_path}", orthanc.dicomweb_url());
    let plain = http(
        "GET",
        &url,
        &[("Accept", "multipart/related; type=\"application/dicom\"")],
        b"",
    )
    .unwrap();
    assert_eq!(plain.status, 200);
    let dicm = plain
        .body
        .windows(4)
        .position(|w| w == b"DICM")
        .expect("a PS3.10 part");
    let (_, meta) = split_part10_header(&plain.body[dicm - 128..]).unwrap();
    assert_eq!(meta.transfer_syntax_uid, EXPLICIT_LE);

    // ...and transcoded to Explicit VR Little Endian when asked.
    match client.retrieve(&jpeg_path, Some(EXPLICIT_LE)).await {
        Ok(mut parts) => {
            let mut part = parts.next_part().await.unwrap().expect("one part");
            let meta = part.file_meta().await.unwrap();
            let mut n = 0;
            while let Some(c) = part.chunk().await.unwrap() {
                n += c.len();
            }
            drop(part);
            assert!(parts.next_part().await.unwrap().is_none());
            eprintln!(
                "JPEG baseline asked as {EXPLICIT_LE}: got {} ({n} data set bytes; stored {})",
                meta.transfer_syntax_uid,
                data_set(&stored).len()
            );
            assert_eq!(meta.transfer_syntax_uid, EXPLICIT_LE, "Orthanc transcodes");
            assert!(n > data_set(&stored).len(), "decompressed");
        }
        Err(e) => panic!("Orthanc 1.10 transcodes JPEG baseline, but: {e}"),
    }
    // A syntax Orthanc cannot produce is an HTTP error, reported as such.
    // Orthanc 1.10 has no JPEG 2000 encoder and answers 500 (PS3.18 would
    // have 406): the client passes the origin's status on.
    match client.retrieve(&jpeg_path, Some(JPEG_2000)).await {
        Err(UpstreamError::Status {
            status, message, ..
        }) => assert_eq!(status, 500, "JPEG 2000 from Orthanc 1.10: {message}"),
        Err(e) => panic!("JPEG 2000 from Orthanc 1.10: expected HTTP 500, got {e}"),
        Ok(mut parts) => panic!(
            "Orthanc 1.10 cannot encode JPEG 2000, yet answered with a part: {:?}",
            parts.next_part().await.map(|p| p.map(|p| p.content_type()))
        ),
    }

    // --- Errors ---------------------------------------------------------
    match client.retrieve("studies/1.2.3.404", None).await {
        Err(UpstreamError::Status { status: 404, .. }) => {}
        Err(e) => panic!("missing study: {e}"),
        Ok(_) => panic!("missing study answered with parts"),
    }
    match client
        .qido_page("studies", &params(&[("00100020", "x")]), 0, 0)
        .await
    {
        Ok(found) => assert!(found.is_empty()),
        Err(e) => panic!("{e}"),
    }
}
