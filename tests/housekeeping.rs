//! Job-table housekeeping against the real daemon and Orthanc: an instance
//! the archive refuses fails; once the operator fixed the file, `pons jobs
//! retry` sends it again; `pons jobs purge` and `[jobs] retention_days`
//! remove finished jobs and refused files.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

/// `pons jobs ARGS --config CONFIG`: (success, stdout + stderr).
fn jobs_cli(pons: &Pons, args: &[&str]) -> (bool, String) {
    let mut all = vec!["jobs"];
    all.extend_from_slice(args);
    all.extend(["--config", pons.config_path().to_str().unwrap()]);
    let out = pons_cli(&all);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The ids of the jobs `pons jobs` lists with these filters.
fn job_ids(pons: &Pons, filters: &[&str]) -> Vec<i64> {
    let (ok, text) = jobs_cli(pons, filters);
    assert!(ok, "{text}");
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn a_refused_instance_is_retried_by_hand_and_old_jobs_are_purged() {
    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    let mut pons = Pons::start(&cfg.to_toml());
    let files = testdata().ct(3).files(3);

    // Orthanc refuses a CT without a Study Instance UID.
    let broken = state.path().join("broken.dcm");
    std::fs::copy(&files[0], &broken).unwrap();
    let out = dcmtk("dcmodify")
        .args(["-nb", "-ea", "(0020,000d)"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    storescu("MODALITY", "PONS", pons.dimse_port(), &[&broken], &[]).assert_success();
    storescu("MODALITY", "PONS", pons.dimse_port(), &files[1..], &[]).assert_success();
    assert!(wait_until(Duration::from_secs(30), || job_ids(
        &pons,
        &["--state", "failed"]
    )
    .len()
        == 1));
    let failed = job_ids(&pons, &["--state", "failed"])[0];
    assert_eq!(orthanc.wait_for_instances(2, Duration::from_secs(20)), 2);
    let refused_dir = cfg.spool_dir.join("failed");
    let refused: Vec<_> = std::fs::read_dir(&refused_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(refused.len(), 1);

    // Retrying a job that did not fail is refused with the reason.
    // The job settles just after Orthanc has the instance.
    assert!(wait_until(Duration::from_secs(10), || !job_ids(
        &pons,
        &["--state", "done"]
    )
    .is_empty()));
    let done = job_ids(&pons, &["--state", "done"])[0];
    let (ok, text) = jobs_cli(&pons, &["retry", &done.to_string()]);
    assert!(!ok && text.contains("not failed"), "{text}");

    // The operator fixes the file (here: the original, with its study) and retries.
    std::fs::copy(&files[0], &refused[0]).unwrap();
    let (ok, text) = jobs_cli(&pons, &["retry", &failed.to_string()]);
    assert!(ok, "{text}");
    assert!(text.contains("pending again"), "{text}");
    assert_eq!(orthanc.wait_for_instances(3, Duration::from_secs(30)), 3);
    assert!(wait_until(Duration::from_secs(10), || job_ids(
        &pons,
        &["--state", "done"]
    )
    .len()
        == 3));
    assert!(std::fs::read_dir(&refused_dir).unwrap().next().is_none());

    // Purge by hand: nothing is 1 day old; everything finished is 0 days old.
    let (ok, text) = jobs_cli(&pons, &["purge", "--older-than", "1"]);
    assert!(ok && text.contains("purged 0 finished jobs"), "{text}");
    let (ok, text) = jobs_cli(&pons, &["purge", "--older-than", "0"]);
    assert!(ok && text.contains("purged 3 finished jobs"), "{text}");
    assert!(job_ids(&pons, &[]).is_empty());

    // The daemon purges what is past [jobs] retention_days by itself (at
    // start, then hourly): a job finished 40 days ago is gone after a restart.
    storescu("MODALITY", "PONS", pons.dimse_port(), &files[1..2], &[]).assert_success();
    assert!(wait_until(Duration::from_secs(20), || job_ids(
        &pons,
        &["--state", "done"]
    )
    .len()
        == 1));
    let db = state.path().join("jobs.db");
    age_jobs(&db, 40);
    pons.restart();
    assert!(wait_until(Duration::from_secs(10), || job_ids(&pons, &[]).is_empty()));
    assert!(
        pons.log().contains("finished jobs past retention purged"),
        "{}",
        pons.log()
    );
}

/// Make every job look last changed `days` ago (python's sqlite3).
fn age_jobs(db: &Path, days: i64) {
    let sql = format!(
        "UPDATE jobs SET updated_at = updated_at - {}",
        days * 86_400_000
    );
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
