//! Direction A C-MOVE and C-GET against real peers: DCMTK movescu/getscu →
//! Pons → QIDO-RS + WADO-RS on Orthanc, sub-operations into DCMTK storescp
//! (C-MOVE) or back to getscu (C-GET).

mod common;

use common::archive::*;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

struct Setup {
    orthanc: Orthanc,
    pons: Pons,
    scp: StoreScp,
    files: Vec<PathBuf>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn setup(scp_args: &[&str]) -> Setup {
    setup_with(Orthanc::start(), scp_args)
}

fn setup_with(orthanc: Orthanc, scp_args: &[&str]) -> Setup {
    setup_limited(orthanc, scp_args, &[])
}

/// With `[dimse]` numbers set, e.g. max_sub_operations.
fn setup_limited(orthanc: Orthanc, scp_args: &[&str], dimse: &[(&str, i64)]) -> Setup {
    let data = tempfile::tempdir().unwrap();
    let files = load_archive(&orthanc, data.path());
    let scp = StoreScp::start_with_args("STORESCP", scp_args);
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    cfg.known_aes = vec![scp.known_ae()];
    let pons = Pons::start(&set_numbers(&cfg.to_toml(), "dimse", dimse));
    Setup {
        orthanc,
        pons,
        scp,
        files,
        _dirs: (data, state),
    }
}

fn run(tool: &str, pons: &Pons, args: &[&str], keys: &[String]) -> String {
    let mut cmd = dcmtk(tool);
    cmd.args(["-v", "-d", "-aet", "MODALITY", "-aec", "PONS"])
        .args(args);
    for k in keys {
        cmd.arg("-k").arg(k);
    }
    cmd.arg("127.0.0.1").arg(pons.dimse_port().to_string());
    let out = cmd.output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn final_status(log: &str) -> String {
    log.lines()
        .rfind(|l| l.contains("DIMSE Status"))
        .unwrap_or_else(|| panic!("no status in:\n{log}"))
        .to_owned()
}

/// SOP Instance UIDs of the PS3.10 files in `dir`.
fn received(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let obj =
                dicom_object::open_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            obj.meta().media_storage_sop_instance_uid().to_owned()
        })
        .collect()
}

fn instances_of(series: &[&str]) -> BTreeSet<String> {
    ARCHIVE
        .iter()
        .filter(|s| series.contains(&s.series))
        .flat_map(|s| (1..=s.instances).map(move |i| uid(&format!("{}.{i}", s.series))))
        .collect()
}

/// The received files hold the same data sets as the files that were loaded.
fn assert_same_as_loaded(s: &Setup, dir: &Path) {
    let pairs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let got = e.unwrap().path();
            let uid = dicom_object::open_file(&got)
                .unwrap()
                .meta()
                .media_storage_sop_instance_uid()
                .to_owned();
            let original = s
                .files
                .iter()
                .find(|f| f.to_string_lossy().contains(&uid))
                .unwrap()
                .clone();
            (original, std::fs::read(&got).unwrap())
        })
        .collect();
    compare_datasets(&pairs).unwrap();
}

#[test]
fn c_move_study_series_image_and_patient_levels() {
    let s = setup(&[]);
    let study = format!("StudyInstanceUID={}", uid("1.1"));
    let log = run(
        "movescu",
        &s.pons,
        &["-S", "-aem", "STORESCP"],
        &["QueryRetrieveLevel=STUDY".into(), study],
    );
    assert!(final_status(&log).contains("0x0000"), "{log}");
    assert_eq!(
        received(&s.scp.out_dir()),
        instances_of(&["1.1.1", "1.1.2"])
    );
    assert_same_as_loaded(&s, &s.scp.out_dir());

    let series = format!("SeriesInstanceUID={}", uid("1.2.2"));
    let log = run(
        "movescu",
        &s.pons,
        &["-S", "-aem", "STORESCP"],
        &["QueryRetrieveLevel=SERIES".into(), series],
    );
    assert!(final_status(&log).contains("0x0000"), "{log}");
    assert_eq!(
        received(&s.scp.out_dir()),
        instances_of(&["1.1.1", "1.1.2", "1.2.2"])
    );

    let image = format!("SOPInstanceUID={}\\{}", uid("2.1.1.1"), uid("3.1.1.2"));
    let log = run(
        "movescu",
        &s.pons,
        &["-S", "-aem", "STORESCP"],
        &["QueryRetrieveLevel=IMAGE".into(), image],
    );
    assert!(final_status(&log).contains("0x0000"), "{log}");
    assert!(received(&s.scp.out_dir()).contains(&uid("3.1.1.2")));

    let log = run(
        "movescu",
        &s.pons,
        &["-P", "-aem", "STORESCP"],
        &["QueryRetrieveLevel=PATIENT".into(), "PatientID=PC3".into()],
    );
    assert!(final_status(&log).contains("0x0000"), "{log}");
    let all = instances_of(&["1.1.1", "1.1.2", "1.2.2", "2.1.1", "3.1.1"]);
    assert_eq!(received(&s.scp.out_dir()), all);
    let completed = log
        .lines()
        .rfind(|l| l.contains("Completed Suboperations"))
        .unwrap();
    assert!(completed.trim_end().ends_with(": 3"), "{log}");
}

#[test]
fn c_move_to_an_unknown_destination_is_a801() {
    let s = setup(&[]);
    let study = format!("StudyInstanceUID={}", uid("1.1"));
    let log = run(
        "movescu",
        &s.pons,
        &["-S", "-aem", "NOBODY"],
        &["QueryRetrieveLevel=STUDY".into(), study],
    );
    assert!(final_status(&log).contains("0xa801"), "{log}");
    assert!(log.contains("NOBODY is not in [[ae]]"), "{log}");
    assert!(received(&s.scp.out_dir()).is_empty());
}

#[test]
fn a_retrieve_of_more_instances_than_allowed_is_refused_before_any_is_sent() {
    let s = setup_limited(Orthanc::start(), &[], &[("max_sub_operations", 3)]);
    // Study 1.1 holds 4 instances: one too many.
    let study = format!("StudyInstanceUID={}", uid("1.1"));
    let log = run(
        "movescu",
        &s.pons,
        &["-S", "-aem", "STORESCP"],
        &["QueryRetrieveLevel=STUDY".into(), study.clone()],
    );
    assert!(final_status(&log).contains("0xa702"), "{log}");
    assert!(log.contains("more than 3 instances"), "{log}");
    assert!(received(&s.scp.out_dir()).is_empty());
    // Its series (2 instances each) are within the limit.
    let series = format!("SeriesInstanceUID={}", uid("1.1.2"));
    let log = run(
        "movescu",
        &s.pons,
        &["-S", "-aem", "STORESCP"],
        &["QueryRetrieveLevel=SERIES".into(), study, series],
    );
    assert!(final_status(&log).contains("0x0000"), "{log}");
    assert_eq!(received(&s.scp.out_dir()), instances_of(&["1.1.2"]));
}

/// A commit_scu.py REFS file naming `files`, deleted on drop.
fn dir_refs(files: &[PathBuf]) -> tempfile::NamedTempFile {
    let refs: Vec<[String; 2]> = files
        .iter()
        .map(|f| {
            let obj = dicom_object::open_file(f).unwrap();
            let meta = obj.meta();
            [
                meta.media_storage_sop_class_uid()
                    .trim_end_matches('\0')
                    .to_owned(),
                meta.media_storage_sop_instance_uid()
                    .trim_end_matches('\0')
                    .to_owned(),
            ]
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&refs).unwrap()).unwrap();
    file
}

/// `config` with one more `[[ae]]`, limited to `services` and `destinations`.
fn with_limited_ae(config: &str, title: &str, services: &[&str], destinations: &[&str]) -> String {
    let mut t: toml::Table = config.parse().unwrap();
    let list = |v: &[&str]| toml::Value::Array(v.iter().map(|s| toml::Value::from(*s)).collect());
    let mut ae = toml::Table::new();
    ae.insert("title".into(), title.into());
    ae.insert("host".into(), "127.0.0.1".into());
    ae.insert("port".into(), toml::Value::Integer(1));
    ae.insert("services".into(), list(services));
    ae.insert("move_destinations".into(), list(destinations));
    let aes = t
        .entry("ae")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    aes.as_array_mut().unwrap().push(toml::Value::Table(ae));
    toml::to_string(&t).unwrap()
}

#[test]
fn each_ae_may_use_only_its_services_and_move_destinations() {
    let orthanc = Orthanc::start();
    let data = tempfile::tempdir().unwrap();
    let files = load_archive(&orthanc, data.path());
    let scp = StoreScp::start("STORESCP");
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    cfg.known_aes = vec![scp.known_ae(), KnownAe::new("ELSEWHERE", 1)];
    let config = with_limited_ae(&cfg.to_toml(), "MODALITY", &["echo", "move"], &["STORESCP"]);
    let pons = Pons::start(&with_limited_ae(&config, "LOADER", &["store"], &[]));
    let study = format!("StudyInstanceUID={}", uid("3.1"));
    let keys = ["QueryRetrieveLevel=STUDY".to_owned(), study];

    let log = run("findscu", &pons, &["-S"], &keys);
    assert!(final_status(&log).contains("0x0124"), "{log}");
    assert!(log.contains("MODALITY may not use C-FIND here"), "{log}");
    let log = run("movescu", &pons, &["-S", "-aem", "ELSEWHERE"], &keys);
    assert!(final_status(&log).contains("0xa801"), "{log}");
    assert!(log.contains("MODALITY may not move to ELSEWHERE"), "{log}");
    let log = run("movescu", &pons, &["-S", "-aem", "STORESCP"], &keys);
    assert!(final_status(&log).contains("0x0000"), "{log}");
    assert_eq!(received(&scp.out_dir()), instances_of(&["3.1.1"]));
    assert!(echoscu("MODALITY", "PONS", pons.dimse_port(), &[])
        .status
        .success());
    let out = tempfile::tempdir().unwrap();
    let log = run(
        "getscu",
        &pons,
        &["-S", "-od", out.path().to_str().unwrap()],
        &keys,
    );
    assert!(final_status(&log).contains("0x0124"), "{log}");
    assert!(log.contains("MODALITY may not use C-GET here"), "{log}");
    // Storage commitment (N-ACTION) is not among its services either.
    let refs = dir_refs(&files[..1]);
    let commit = script_command("commit_scu.py")
        .args(["request", "127.0.0.1", &pons.dimse_port().to_string()])
        .arg(refs.path())
        .args(["--calling", "MODALITY", "--wait", "0"])
        .output()
        .unwrap();
    let answer: serde_json::Value =
        serde_json::from_slice(&commit.stdout).unwrap_or_else(|e| panic!("{e}: {commit:?}"));
    assert_eq!(answer["status"], 0x0124, "{answer}");
    let comment = answer["error_comment"].as_str().unwrap_or_default();
    assert!(
        comment.contains("may not use storage commitment"),
        "{answer}"
    );

    // LOADER may store, and nothing else: not even C-ECHO.
    let echo = echoscu("LOADER", "PONS", pons.dimse_port(), &["-v"]);
    let echo_log =
        String::from_utf8_lossy(&echo.stderr).into_owned() + &String::from_utf8_lossy(&echo.stdout);
    assert!(echo_log.contains("Status: 0x124"), "{echo_log}");
    storescu("LOADER", "PONS", pons.dimse_port(), &files[..1], &[]).assert_success();
    let refused = storescu(
        "MODALITY",
        "PONS",
        pons.dimse_port(),
        &files[..1],
        &["-v", "-d"],
    );
    let text = format!("{}{}", refused.stdout, refused.stderr);
    assert!(text.contains("MODALITY may not use C-STORE here"), "{text}");
}

#[test]
fn c_move_with_the_archive_down_fails_with_a_comment() {
    let mut s = setup(&[]);
    s.orthanc.stop();
    let study = format!("StudyInstanceUID={}", uid("1.1"));
    let log = run(
        "movescu",
        &s.pons,
        &["-S", "-aem", "STORESCP"],
        &["QueryRetrieveLevel=STUDY".into(), study],
    );
    assert!(final_status(&log).contains("0xc000"), "{log}");
    assert!(log.contains("archive unreachable"), "{log}");
}

#[test]
fn c_get_sends_the_series_back_on_the_same_association() {
    let s = setup(&[]);
    let out = tempfile::tempdir().unwrap();
    let study = format!("StudyInstanceUID={}", uid("1.2"));
    let series = format!("SeriesInstanceUID={}", uid("1.2.1"));
    let log = run(
        "getscu",
        &s.pons,
        &["-S", "-od", out.path().to_str().unwrap()],
        &["QueryRetrieveLevel=SERIES".into(), study, series],
    );
    assert!(final_status(&log).contains("0x0000"), "{log}");
    assert_eq!(received(out.path()), instances_of(&["1.2.1"]));
    assert_same_as_loaded(&s, out.path());
}

fn qr_client(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(venv_python())
        .arg(repo_root().join("scripts/qr_client.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn c_get_counts_instances_without_an_accepted_context_as_failed() {
    let s = setup(&[]);
    let port = s.pons.dimse_port().to_string();
    // Study 1.1 holds a CT and an MR series; the requester takes back only MR.
    let r = qr_client(&["get-only-mr", "127.0.0.1", &port, "PONS", &uid("1.1")]);
    assert_eq!(r["status"], "0xB000", "{r}");
    assert_eq!(r["completed"], 2, "{r}");
    assert_eq!(r["failed"], 2, "{r}");
    let failed: BTreeSet<String> = r["failed_uids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failed, instances_of(&["1.1.1"]));
    assert!(
        r["comment"]
            .as_str()
            .unwrap()
            .contains("no accepted context"),
        "{r}"
    );
}

#[test]
fn c_cancel_stops_a_move_with_the_counts_so_far() {
    let s = setup(&[]);
    let ct = testdata().ct(200);
    storescu(
        "LOADER",
        s.orthanc.aet(),
        s.orthanc.dicom_port(),
        &ct.files(200),
        &[],
    )
    .assert_success();
    let study = dicom_object::open_file(&ct.instances[0].path)
        .unwrap()
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim()
        .to_owned();
    let port = s.pons.dimse_port().to_string();
    let r = qr_client(&[
        "move-cancel",
        "127.0.0.1",
        &port,
        "PONS",
        "STORESCP",
        &study,
        "0.3",
    ]);
    assert_eq!(r["status"], "0xFE00", "{r}");
    let done = r["completed"].as_u64().unwrap();
    assert!(done < 200, "{r}");
    assert_eq!(
        done + r["remaining"].as_u64().unwrap() + r["failed"].as_u64().unwrap(),
        200,
        "{r}"
    );
    // What was reported completed did arrive.
    assert_eq!(received(&s.scp.out_dir()).len() as u64, done);
}

#[test]
fn c_move_transcodes_for_a_destination_that_takes_only_uncompressed() {
    // This storescp accepts only uncompressed syntaxes.
    let s = setup(&["+x="]);
    let jpeg = testdata()
        .samples
        .iter()
        .find(|i| i.transfer_syntax == "1.2.840.10008.1.2.4.50")
        .expect("a JPEG baseline sample");
    storescu(
        "LOADER",
        s.orthanc.aet(),
        s.orthanc.dicom_port(),
        &[&jpeg.path],
        &[],
    )
    .assert_success();
    let (study, _, _, _) = file_uids(&jpeg.path);
    // By its UID, and within its study (where the origin is asked which
    // series it is in).
    for key in [
        format!(
            "QueryRetrieveLevel=IMAGE\nSOPInstanceUID={}",
            jpeg.sop_instance
        ),
        format!("QueryRetrieveLevel=STUDY\nStudyInstanceUID={study}"),
    ] {
        for f in s.scp.files() {
            std::fs::remove_file(f).unwrap();
        }
        let keys: Vec<String> = key.lines().map(str::to_owned).collect();
        let log = run("movescu", &s.pons, &["-S", "-aem", "STORESCP"], &keys);
        assert!(final_status(&log).contains("0x0000"), "{log}");
        let files = s.scp.files();
        assert_eq!(files.len(), 1, "{key}");
        let got = dicom_object::open_file(&files[0]).unwrap();
        assert_eq!(
            got.meta().media_storage_sop_instance_uid(),
            jpeg.sop_instance
        );
        assert_eq!(got.meta().transfer_syntax(), "1.2.840.10008.1.2.1");
    }
}

/// The archive counts an instance (its index has it) whose file is gone:
/// Orthanc then fails the series's WADO-RS, and even the listing of its
/// instances (it reads every file), with a 500. Nothing is claimed: the
/// C-GET ends in A702 counting both instances failed, with an Error Comment
/// that says why. (An origin that can still list the instances gets each
/// fetched on its own, and only the lost one failed.)
#[test]
fn an_archive_that_lost_a_file_gets_no_success_claimed() {
    // No storage cache: a lost file must stay lost.
    let orthanc = Orthanc::start_with(OrthancOptions {
        extra: serde_json::json!({"MaximumStorageCacheSize": 0}),
        ..Default::default()
    });
    let s = setup_with(orthanc, &[]);
    let lost = uid("1.2.2.2");
    s.orthanc.lose_file(&lost);
    let out = tempfile::tempdir().unwrap();
    let study = format!("StudyInstanceUID={}", uid("1.2"));
    let series = format!("SeriesInstanceUID={}", uid("1.2.2"));
    let log = run(
        "getscu",
        &s.pons,
        &["-S", "-od", out.path().to_str().unwrap()],
        &["QueryRetrieveLevel=SERIES".into(), study, series],
    );
    assert!(final_status(&log).contains("0xa702"), "{log}");
    assert!(log.contains("WADO-RS: archive answered HTTP 500"), "{log}");
    let failed = log
        .lines()
        .rfind(|l| l.contains("Failed Suboperations"))
        .unwrap();
    assert!(failed.trim_end().ends_with(": 2"), "{log}");
    assert!(received(out.path()).is_empty());
}

/// scripts/faulty_origin.py in front of `s`'s Orthanc, failing one instance
/// in every WADO-RS answer that holds it (`drop`: left out; `break`: the
/// connection closes in the middle of it), and a Pons whose upstream it is,
/// moving to `s`'s storescp.
fn behind_faulty_origin(s: &Setup, uid: &str, mode: &str, state: &Path) -> (ScriptPeer, Pons) {
    let port = free_port();
    let url = s.orthanc.dicomweb_url();
    let origin = ScriptPeer::start("faulty_origin.py", &[&port.to_string(), &url, uid, mode]);
    let path = url.splitn(4, '/').nth(3).unwrap_or_default();
    let mut cfg = PonsConfig::new(&format!("http://127.0.0.1:{port}/{path}"), state);
    cfg.known_aes = vec![s.scp.known_ae()];
    (origin, Pons::start(&cfg.to_toml()))
}

fn uids(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_instance_the_archive_lists_but_does_not_deliver_is_failed_and_listed() {
    let s = setup(&[]);
    let lost = uid("1.1.1.1");
    let state = tempfile::tempdir().unwrap();
    let (_origin, pons) = behind_faulty_origin(&s, &lost, "drop", state.path());
    let port = pons.dimse_port().to_string();

    // Study 1.1: a CT and an MR series; all but the lost instance arrive.
    let r = qr_client(&[
        "move",
        "127.0.0.1",
        &port,
        "PONS",
        "STORESCP",
        "STUDY",
        &uid("1.1"),
    ]);
    assert_eq!(r["status"], "0xB000", "{r}");
    assert_eq!(
        uids(&r["failed_uids"]),
        BTreeSet::from([lost.clone()]),
        "{r}"
    );
    assert_eq!(
        (r["completed"].as_u64(), r["failed"].as_u64()),
        (Some(3), Some(1)),
        "{r}"
    );
    assert!(
        r["comment"].as_str().unwrap().contains("did not deliver"),
        "{r}"
    );
    let mut expected = instances_of(&["1.1.1", "1.1.2"]);
    expected.remove(&lost);
    assert_eq!(received(&s.scp.out_dir()), expected);
    assert_same_as_loaded(&s, &s.scp.out_dir());

    // Asked for alone, nothing moves.
    let r = qr_client(&[
        "move",
        "127.0.0.1",
        &port,
        "PONS",
        "STORESCP",
        "IMAGE",
        &lost,
    ]);
    assert_eq!(r["status"], "0xA702", "{r}");
    assert_eq!(uids(&r["failed_uids"]), BTreeSet::from([lost]), "{r}");
    assert_eq!(r["completed"], 0, "{r}");
}

/// An answer that breaks off in the middle of an instance leaves the
/// C-STORE of it half sent: that association is aborted (the destination
/// must not take the next command for the rest of the data set) and the
/// other instances go on a new one.
#[test]
fn an_answer_that_breaks_off_mid_instance_fails_that_instance_alone() {
    let s = setup(&[]);
    // Instances of ~0.5 MB: many P-DATA PDUs each.
    let ct = testdata().ct(200);
    let files = ct.files(5);
    storescu(
        "LOADER",
        s.orthanc.aet(),
        s.orthanc.dicom_port(),
        &files,
        &[],
    )
    .assert_success();
    let (study, _, broken, _) = file_uids(&files[0]);
    let state = tempfile::tempdir().unwrap();
    let (_origin, pons) = behind_faulty_origin(&s, &broken, "break", state.path());
    let port = pons.dimse_port().to_string();
    let r = qr_client(&[
        "move",
        "127.0.0.1",
        &port,
        "PONS",
        "STORESCP",
        "STUDY",
        &study,
    ]);
    assert_eq!(r["status"], "0xB000", "{r}");
    assert_eq!(
        uids(&r["failed_uids"]),
        BTreeSet::from([broken.clone()]),
        "{r}"
    );
    assert_eq!(r["completed"], 4, "{r}");
    let pairs: Vec<(PathBuf, Vec<u8>)> = files[1..]
        .iter()
        .map(|f| {
            let (_, _, sop, _) = file_uids(f);
            let got = s
                .scp
                .files()
                .into_iter()
                .find(|p| p.file_name().unwrap().to_string_lossy().ends_with(&sop));
            let got = got.unwrap_or_else(|| panic!("{sop} did not arrive"));
            (f.clone(), std::fs::read(got).unwrap())
        })
        .collect();
    compare_datasets(&pairs).unwrap();
    assert_eq!(s.scp.files().len(), 4, "only whole instances are stored");
}

/// A [[pacs]] AE title may call us to deliver what we asked of it, but
/// without an [[ae]] entry it may not query, retrieve or store here.
#[test]
fn a_pacs_without_an_ae_entry_may_not_use_direction_a() {
    let orthanc = Orthanc::start();
    let data = tempfile::tempdir().unwrap();
    load_archive(&orthanc, data.path());
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    cfg.accept_any_calling_ae = false;
    cfg.pacs = vec![PacsEntry::new("main", "PACSAE", orthanc.dicom_port())];
    let pons = Pons::start(&cfg.to_toml());
    let find = dcmtk("findscu")
        .args([
            "-v",
            "-d",
            "-S",
            "-aet",
            "PACSAE",
            "-aec",
            "PONS",
            "-k",
            "QueryRetrieveLevel=STUDY",
        ])
        .args(["127.0.0.1", &pons.dimse_port().to_string()])
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&find.stdout).into_owned() + &String::from_utf8_lossy(&find.stderr);
    assert!(final_status(&log).contains("0x0124"), "{log}");
    assert!(log.contains("PACSAE is a [[pacs]] here"), "{log}");
    assert!(echoscu("PACSAE", "PONS", pons.dimse_port(), &[])
        .status
        .success());
}
