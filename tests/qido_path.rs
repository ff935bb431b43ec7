//! Direction B QIDO-RS: dicomweb-client (and plain HTTP) → Pons → C-FIND on
//! Orthanc's DIMSE side, with a small archive whose contents the test knows.

mod common;

use common::archive::*;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;

struct Setup {
    orthanc: Orthanc,
    pons: Pons,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn setup() -> Setup {
    let orthanc = Orthanc::start();
    let data = tempfile::tempdir().unwrap();
    load_archive(&orthanc, data.path());
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let pons = Pons::start(&cfg.to_toml());
    Setup {
        orthanc,
        pons,
        _dirs: (data, state),
    }
}

fn dicomweb(pons: &Pons) -> String {
    format!("{}/dicom-web", pons.web_url().unwrap())
}

/// Runs the calls through dicomweb-client; one result list per call.
fn client(url: &str, calls: &[Value]) -> Vec<Vec<Value>> {
    let out = script_command("qido_client.py")
        .arg(url)
        .arg(serde_json::to_string(calls).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "qido_client.py failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Vec<Value>> = stdout
        .lines()
        .zip(calls)
        .map(|(line, call)| {
            let v: Value = serde_json::from_str(line).unwrap();
            match v {
                Value::Array(a) => a,
                other => panic!("{call}: {other}"),
            }
        })
        .collect();
    assert_eq!(results.len(), calls.len(), "{stdout}");
    results
}

fn first(m: &Value, tag: &str) -> String {
    let v = &m[tag]["Value"][0];
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => o["Alphabetic"].as_str().unwrap().to_owned(),
        other => other.to_string(),
    }
}

/// The path of a match's RetrieveURL. dicomweb-client sends `Host` without
/// the port, and the URL is built from `Host` (as Orthanc does), so only the
/// path is compared here; `bad_requests_...` checks a whole URL.
fn retrieve_path(m: &Value) -> String {
    let url = first(m, "00081190");
    let rest = url
        .strip_prefix("http://127.0.0.1")
        .unwrap_or_else(|| panic!("{url}"));
    rest.trim_start_matches(|c: char| c == ':' || c.is_ascii_digit())
        .to_owned()
}

fn set(matches: &[Value], tag: &str) -> BTreeSet<String> {
    matches.iter().map(|m| first(m, tag)).collect()
}

fn uids_of(suffixes: &[&str]) -> BTreeSet<String> {
    suffixes.iter().map(|s| uid(s)).collect()
}

const STUDY: &str = "0020000D";
const SERIES: &str = "0020000E";
const SOP: &str = "00080018";

#[test]
fn dicomweb_client_finds_exactly_what_the_pacs_holds() {
    let s = setup();
    let url = dicomweb(&s.pons);
    let studies = |filters: Value| serde_json::json!({"op": "studies", "filters": filters});
    let calls = vec![
        studies(Value::Null),
        studies(serde_json::json!({"PatientID": "PA1"})),
        studies(serde_json::json!({"PatientName": "DOE*"})),
        studies(serde_json::json!({"00100010": "?OE^*"})),
        studies(serde_json::json!({"StudyDate": "20200101-20211231"})),
        studies(serde_json::json!({"StudyDate": "20220101-"})),
        studies(serde_json::json!({"StudyInstanceUID": format!("{},{}", uid("1.2"), uid("3.1"))})),
        studies(serde_json::json!({"PatientName": "Müller*"})),
        studies(serde_json::json!({"PatientID": "NOBODY"})),
        serde_json::json!({"op": "series", "study": uid("1.1")}),
        serde_json::json!({"op": "series", "filters": {"Modality": "MR"}}),
        serde_json::json!({"op": "instances", "study": uid("1.2"), "series": uid("1.2.1")}),
        serde_json::json!({"op": "instances", "study": uid("1.1")}),
        serde_json::json!({"op": "instances", "filters": {"PatientID": "PC3"}}),
        serde_json::json!({"op": "series", "study": uid("3.1"), "fields": ["PatientName", "AccessionNumber"]}),
        serde_json::json!({"op": "studies", "fuzzy": true, "filters": {"PatientID": "PB2"}}),
    ];
    let r = client(&url, &calls);

    let all = uids_of(&["1.1", "1.2", "2.1", "3.1"]);
    assert_eq!(set(&r[0], STUDY), all);
    for m in &r[0] {
        // The default study attributes, and a RetrieveURL at our address.
        let study = first(m, STUDY);
        assert_eq!(retrieve_path(m), format!("/dicom-web/studies/{study}"));
        for tag in ["00080020", "00080050", "00100010", "00100020", "00080061"] {
            assert!(m.get(tag).is_some(), "{tag} missing in {m}");
        }
        assert!(
            m.get("00080052").is_none(),
            "no Query/Retrieve Level in QIDO"
        );
    }
    assert_eq!(set(&r[1], STUDY), uids_of(&["1.1", "1.2"]));
    assert_eq!(set(&r[2], STUDY), uids_of(&["1.1", "1.2"]));
    assert_eq!(set(&r[3], STUDY), uids_of(&["1.1", "1.2", "3.1"]));
    assert_eq!(set(&r[4], STUDY), uids_of(&["1.1", "1.2"]));
    assert_eq!(set(&r[5], STUDY), uids_of(&["2.1", "3.1"]));
    assert_eq!(set(&r[6], STUDY), uids_of(&["1.2", "3.1"]));
    // Non-ASCII: matched at the PACS and answered in UTF-8.
    assert_eq!(set(&r[7], STUDY), uids_of(&["2.1"]));
    assert_eq!(first(&r[7][0], "00100010"), "Müller^Jürgen");
    assert!(r[8].is_empty());

    assert_eq!(set(&r[9], SERIES), uids_of(&["1.1.1", "1.1.2"]));
    for m in &r[9] {
        assert_eq!(
            retrieve_path(m),
            format!(
                "/dicom-web/studies/{}/series/{}",
                uid("1.1"),
                first(m, SERIES)
            )
        );
    }
    assert_eq!(set(&r[10], SERIES), uids_of(&["1.1.2", "3.1.1"]));
    // All series: the study attributes come along.
    assert_eq!(set(&r[10], "00100020"), ["PA1".into(), "PC3".into()].into());

    assert_eq!(set(&r[11], SOP), uids_of(&["1.2.1.1", "1.2.1.2"]));
    assert_eq!(
        retrieve_path(&r[11][0]),
        format!(
            "/dicom-web/studies/{}/series/{}/instances/{}",
            uid("1.2"),
            uid("1.2.1"),
            first(&r[11][0], SOP)
        )
    );
    assert_eq!(
        set(&r[12], SOP),
        uids_of(&["1.1.1.1", "1.1.1.2", "1.1.2.1", "1.1.2.2"])
    );
    assert_eq!(
        set(&r[13], SOP),
        uids_of(&["3.1.1.1", "3.1.1.2", "3.1.1.3"])
    );

    // includefield: study attributes asked for at the series level.
    assert_eq!(r[14].len(), 1);
    assert_eq!(first(&r[14][0], "00100010"), "ROE^JANE");
    assert_eq!(first(&r[14][0], "00080050"), "ACC3.1");
    assert_eq!(set(&r[15], STUDY), uids_of(&["2.1"]));
    drop(s.orthanc);
}

#[test]
fn limit_and_offset_page_through_every_match_once() {
    let s = setup();
    let url = dicomweb(&s.pons);
    let page = |offset: usize| serde_json::json!({"op": "instances", "limit": 5, "offset": offset});
    let r = client(&url, &[page(0), page(5), page(10), page(15)]);
    let sizes: Vec<usize> = r.iter().map(Vec::len).collect();
    assert_eq!(sizes, [5, 5, 2, 0]);
    let mut seen = Vec::new();
    for p in &r {
        seen.extend(p.iter().map(|m| first(m, SOP)));
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 12, "a match appeared twice: {seen:?}");
    assert_eq!(unique, s.orthanc.instance_uids());

    // Each page stopped the PACS with C-CANCEL; the association still ended cleanly.
    let r = client(&url, &[serde_json::json!({"op": "studies", "limit": 1})]);
    assert_eq!(r[0].len(), 1);
    let log = s.pons.log();
    assert!(!log.contains("C-FIND failed"), "{log}");
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let s = setup();
    let url = dicomweb(&s.pons);
    let get = |path: &str, headers: &[(&str, &str)]| {
        http("GET", &format!("{url}{path}"), headers, b"").unwrap()
    };
    for (path, named) in [
        ("/studies?PatientNam=DOE", "PatientNam"),
        ("/studies?StudyDate=2020-01-01", "StudyDate"),
        ("/studies?StudyDate=20201301-", "StudyDate"),
        ("/studies?StudyInstanceUID=1.2.abc", "StudyInstanceUID"),
        ("/instances?limit=-3", "limit"),
        ("/instances?offset=ten", "offset"),
        ("/series?includefield=NoSuchThing", "NoSuchThing"),
        ("/studies/1.2.x/series", "study UID"),
    ] {
        let r = get(path, &[]);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains(named), "{path}: {}", r.text());
    }
    let r = get("/studies", &[("Accept", "application/xml")]);
    assert_eq!(r.status, 406, "{}", r.text());

    // Nothing matches: 200 with an empty array.
    let r = get(
        "/studies?PatientID=NOBODY",
        &[("Accept", "application/dicom+json")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/dicom+json"));
    assert_eq!(r.json(), serde_json::json!([]));

    // RetrieveURL: absolute, at the address the client used.
    let r = get("/studies?PatientID=PC3", &[]);
    assert_eq!(
        r.json()[0]["00081190"]["Value"][0],
        format!("{url}/studies/{}", uid("3.1"))
    );
    let r = get(
        "/studies?PatientID=PC3",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "pacs.example.org"),
        ],
    );
    // Proxy headers from a peer not in web.trusted_proxies are ignored
    // (tests/public_url.rs has the trusted case).
    assert_eq!(
        r.json()[0]["00081190"]["Value"][0],
        format!("{url}/studies/{}", uid("3.1"))
    );

    // fuzzymatching is answered literally, and says so.
    let r = get("/studies?fuzzymatching=true&PatientID=PA1", &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("warning").is_some_and(|w| w.starts_with("299 ")));
    assert_eq!(r.json().as_array().unwrap().len(), 2);
}

#[test]
fn pacs_down_is_503_naming_it() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new("ghost", "GHOST", free_port())];
    let pons = Pons::start(&cfg.to_toml());
    let r = http("GET", &format!("{}/studies", dicomweb(&pons)), &[], b"").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("ghost"), "{}", r.text());
}

#[test]
fn each_pacs_answers_at_its_own_path() {
    let main = Orthanc::start();
    let data = tempfile::tempdir().unwrap();
    let files = load_archive(&main, data.path());
    // The second PACS holds patient C only.
    let second = Orthanc::start();
    let c_files: Vec<_> = files
        .iter()
        .filter(|f| f.to_string_lossy().contains(&format!("{}.3.1.", ROOT)))
        .cloned()
        .collect();
    assert_eq!(c_files.len(), 3);
    storescu("LOADER", second.aet(), second.dicom_port(), &c_files, &[]).assert_success();
    assert_eq!(
        second.wait_for_instances(3, std::time::Duration::from_secs(30)),
        3
    );

    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![
        PacsEntry::new("main", main.aet(), main.dicom_port()),
        PacsEntry::new("second", second.aet(), second.dicom_port()),
    ];
    let pons = Pons::start(&cfg.to_toml());
    let web = pons.web_url().unwrap();
    let study = |calls_url: &str| client(calls_url, &[serde_json::json!({"op": "studies"})]);
    let default = study(&format!("{web}/dicom-web"));
    assert_eq!(
        set(&default[0], STUDY),
        uids_of(&["1.1", "1.2", "2.1", "3.1"])
    );
    let named = study(&format!("{web}/pacs/main/dicom-web"));
    assert_eq!(set(&named[0], STUDY), set(&default[0], STUDY));
    let other = study(&format!("{web}/pacs/second/dicom-web"));
    assert_eq!(set(&other[0], STUDY), uids_of(&["3.1"]));
    assert_eq!(
        retrieve_path(&other[0][0]),
        format!("/pacs/second/dicom-web/studies/{}", uid("3.1"))
    );
}

/// scripts/find_scp.py on a free port: a C-FIND SCP that honours C-CANCEL
/// or fails on purpose, saying so on its stdout.
fn fake_pacs(mode: &str) -> (ScriptPeer, u16) {
    let port = free_port();
    (
        ScriptPeer::start("find_scp.py", &[&port.to_string(), mode]),
        port,
    )
}

#[test]
fn limit_cancels_the_pacs_and_failures_carry_their_error_comment() {
    let (mut many, many_port) = fake_pacs("many");
    let (_refuse, refuse_port) = fake_pacs("refuse");
    let (_midway, midway_port) = fake_pacs("midway");
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![
        PacsEntry::new("many", "FAKEPACS", many_port),
        PacsEntry::new("refuse", "FAKEPACS", refuse_port),
        PacsEntry::new("midway", "FAKEPACS", midway_port),
    ];
    let pons = Pons::start(&cfg.to_toml());
    let web = pons.web_url().unwrap();
    let get = |pacs: &str, query: &str| {
        http(
            "GET",
            &format!("{web}/pacs/{pacs}/dicom-web/studies{query}"),
            &[],
            b"",
        )
    };
    let fake_uids = |r: &HttpResponse| -> Vec<String> {
        let list = r.json();
        list.as_array()
            .unwrap()
            .iter()
            .map(|m| first(m, STUDY))
            .collect()
    };
    let fake = |n: usize| format!("1.2.826.0.1.3680043.10.998.{n}");

    // limit: the PACS is told to stop (C-CANCEL) long before its 1000 matches.
    let r = get("many", "?limit=3").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake_uids(&r), [fake(1), fake(2), fake(3)]);
    let said = many.next_line();
    let n: usize = said
        .strip_prefix("cancelled after ")
        .unwrap_or_else(|| panic!("the PACS was not cancelled: {said}"))
        .parse()
        .unwrap();
    assert!((3..100).contains(&n), "{said}");
    let r = get("many", "?offset=2&limit=2").unwrap();
    assert_eq!(fake_uids(&r), [fake(3), fake(4)]);
    assert!(many.next_line().starts_with("cancelled after "));

    // A refusal before any match: an HTTP error with the PACS's reason.
    let r = get("refuse", "").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    for part in ["refuse", "A700", "no room for queries today"] {
        assert!(r.text().contains(part), "{part}: {}", r.text());
    }

    // A failure after three matches: the page is collected before it is
    // answered, so it is refused with the PACS's reason, never sent short.
    let r = get("midway", "").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    for part in ["midway", "C000", "index went away"] {
        assert!(r.text().contains(part), "{part}: {}", r.text());
    }
    assert!(pons.log().contains("index went away"));
}
