//! GET /metrics: after a C-STORE, a C-FIND and a WADO-RS retrieve, the
//! counters moved by exactly what was done. DCMTK on the DIMSE face, plain
//! HTTP on the web face, Orthanc behind both.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// Every sample of a scrape: `name{labels}` → value.
fn scrape(pons: &Pons) -> BTreeMap<String, f64> {
    let rsp = http(
        "GET",
        &format!("{}/metrics", pons.web_url().unwrap()),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert!(rsp
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(rsp.text().ends_with("# EOF\n"));
    rsp.text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_by_exactly_what_was_done() {
    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    cfg.known_aes = vec![KnownAe::new("MODALITY", 104)];
    let pons = Pons::start(&cfg.to_toml());
    let files = testdata().ct(1).files(1);
    let (study, series, sop, _) = file_uids(&files[0]);
    let before = scrape(&pons);
    assert_eq!(
        before.get("pons_build_info{version=\"0.1.0\"}"),
        Some(&1.0),
        "{before:#?}"
    );

    storescu("MODALITY", "PONS", pons.dimse_port(), &files, &[]).assert_success();
    assert_eq!(orthanc.wait_for_instances(1, Duration::from_secs(20)), 1);
    let find = findscu_study("MODALITY", pons.dimse_port(), &study);
    assert!(find.status.success());
    let url = format!(
        "{}/dicom-web/studies/{study}/series/{series}/instances/{sop}",
        pons.web_url().unwrap()
    );
    let got = http(
        "GET",
        &url,
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
        b"",
    )
    .unwrap();
    assert_eq!(got.status, 200);
    // The spooled job settles just after Orthanc has the instance.
    assert!(wait_until(Duration::from_secs(10), || {
        scrape(&pons).get("pons_jobs{kind=\"stow\",state=\"done\"}") == Some(&1.0)
    }));
    let after = scrape(&pons);

    let exactly = [
        ("pons_associations_accepted_total{calling_ae=\"MODALITY\"}", 2.0),
        ("pons_dimse_operations_total{service=\"C-STORE\",status_class=\"success\"}", 1.0),
        ("pons_dimse_operations_total{service=\"C-FIND\",status_class=\"success\"}", 1.0),
        ("pons_dimse_operation_duration_seconds_count{service=\"C-STORE\"}", 1.0),
        ("pons_dimse_operation_duration_seconds_count{service=\"C-FIND\"}", 1.0),
        (
            "pons_http_requests_total{route=\"/dicom-web/studies/{study}/series/{series}/instances/{instance}\",method=\"GET\",status=\"200\"}",
            1.0,
        ),
        ("pons_upstream_requests_total{operation=\"stow\",status=\"200\"}", 1.0),
        ("pons_upstream_requests_total{operation=\"qido\",status=\"200\"}", 1.0),
        ("pons_spool_failures_total", 0.0),
        ("pons_auth_failures_total{reason=\"unauthenticated\"}", 0.0),
    ];
    for (key, want) in exactly {
        assert_eq!(moved(&before, &after, key), want, "{key}\n{after:#?}");
    }
    assert_eq!(after["pons_associations_active"], 0.0);
    assert_eq!(after["pons_spool_backlog_instances"], 0.0);
    assert!(after["pons_cache_bytes"] > 500_000.0, "{after:#?}");
    assert!(moved(&before, &after, "pons_cache_misses_total") >= 1.0);
    assert!(
        after.contains_key("pons_pacs_pool_associations{pacs=\"main\"}"),
        "{after:#?}"
    );
    // No UID in any label.
    for key in after.keys() {
        assert!(!key.contains(&study) && !key.contains(&sop), "{key}");
    }
}
