//! The job table on a real PostgreSQL (Debian's packages, a private cluster
//! per test): the conformance scenarios every back end passes, claims from
//! two processes, a dead process's job taken over after its lease, and two
//! Pons daemons sharing one table (spool jobs stay with their node;
//! `GET /jobs` and `pons jobs` show the shared table).

mod common;

use common::*;
use pons::jobs::{open, JobError, JobId, JobState, JobTable, NewJob, KIND_STOW};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../src/jobs/conformance.rs"]
mod conformance;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn conformance_scenarios() {
    let pg = Postgres::start();
    let dbs = [
        "basic",
        "keys",
        "nodes",
        "overlap",
        "takeover",
        "race",
        "housekeeping",
    ];
    let url: Vec<String> = dbs.iter().map(|db| pg.create_database(db)).collect();
    runtime().block_on(async {
        let t = |i: usize, node: &'static str| {
            let url = url[i].clone();
            async move { open(&url, node).await.unwrap() }
        };
        // Two instances starting at once migrate the same empty database.
        let (a, b) = tokio::join!(t(3, "a"), t(3, "b"));
        tokio::join!(
            async { conformance::exercise(t(0, "n1").await).await },
            async { conformance::keys_and_progress(t(1, "n1").await).await },
            async { conformance::housekeeping(t(6, "n1").await).await },
            async { conformance::node_affinity(t(2, "n1").await, t(2, "n2").await).await },
            conformance::claims_never_overlap(vec![a, b], 300),
            async { conformance::lease_takeover(t(4, "a").await, t(4, "b").await).await },
            async { conformance::unique_keys_race(t(5, "a").await, t(5, "b").await).await },
        );
    });
    let version = pg.psql("overlap", "SELECT MAX(version) FROM jobs_schema");
    assert_eq!(version.trim(), "2", "both openers agreed on one migration");
    assert_eq!(
        pg.psql("overlap", "SELECT COUNT(*) FROM jobs_schema")
            .trim(),
        "2"
    );
}

/// Not a test by itself: the body of the claimer processes the tests below
/// start (`spawn_claimer`), with PONS_CLAIMER = {url, node, kind, mode,
/// lease_ms, start_at}. Ignored, so that a plain run does not count it as a
/// passing test.
#[test]
#[ignore = "a helper process: the tests that need it run it with PONS_CLAIMER set"]
fn claimer_process() {
    let spec = std::env::var("PONS_CLAIMER")
        .expect("PONS_CLAIMER: this is the claimer process of the other tests, not a test");
    let spec: Value = serde_json::from_str(&spec).unwrap();
    runtime().block_on(claimer(spec));
}

async fn claimer(spec: Value) {
    let s = |k: &str| spec[k].as_str().unwrap().to_owned();
    let (node, kind, mode) = (s("node"), s("kind"), s("mode"));
    let lease = Duration::from_millis(spec["lease_ms"].as_u64().unwrap());
    let t = open(&s("url"), &node).await.unwrap();
    let wait = spec["start_at"].as_i64().unwrap_or(0) - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    match mode.as_str() {
        // Claim and complete until nothing is left.
        "drain" => loop {
            let got = t.claim(&kind, &node, 5, lease).await.unwrap();
            if got.is_empty() {
                return;
            }
            for j in got {
                println!("CLAIMED {}", j.id);
                t.complete(j.id).await.unwrap();
            }
        },
        // Claim one job, then hang without renewing until killed.
        "hold" => {
            let got = t.claim(&kind, &node, 1, lease).await.unwrap();
            assert_eq!(got.len(), 1);
            println!("HOLDING {}", got[0].id);
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        // Poll until one job can be claimed; say when.
        "wait" => {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Some(j) = t.claim(&kind, &node, 1, lease).await.unwrap().pop() {
                    println!("CLAIMED {} AT {}", j.id, now_ms());
                    t.complete(j.id).await.unwrap();
                    return;
                }
                println!("NOTHING AT {}", now_ms());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        other => panic!("unknown claimer mode {other}"),
    }
}

fn spawn_claimer(spec: Value) -> Child {
    self_test_command("claimer_process")
        .env("PONS_CLAIMER", spec.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn claimer process")
}

/// What a claimer printed after each `prefix`, split in words. (libtest
/// prints "test claimer_process ... " before the first line, hence not
/// `starts_with`.)
fn lines_with(stdout: &[u8], prefix: &str) -> Vec<Vec<String>> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split_once(prefix))
        .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn two_processes_claim_every_job_exactly_once() {
    const JOBS: usize = 400;
    let pg = Postgres::start();
    let url = pg.create_database("shared");
    let ids: BTreeSet<JobId> = runtime().block_on(async {
        let t = open(&url, "parent").await.unwrap();
        let mut ids = BTreeSet::new();
        for i in 0..JOBS {
            ids.insert(t.insert("work", &json!({ "n": i })).await.unwrap());
        }
        ids
    });
    // Both start claiming at the same moment, whatever their start-up time.
    let start_at = now_ms() + 5000;
    let children: Vec<Child> = ["p1", "p2"]
        .into_iter()
        .map(|node| {
            spawn_claimer(
                json!({"url": url, "node": node, "kind": "work", "mode": "drain",
                                 "lease_ms": 60_000, "start_at": start_at}),
            )
        })
        .collect();
    let mut per_process = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "claimer failed: {}", out.status);
        let claimed: Vec<JobId> = lines_with(&out.stdout, "CLAIMED ")
            .iter()
            .map(|w| w[0].parse().unwrap())
            .collect();
        per_process.push(claimed);
    }
    assert!(
        per_process.iter().all(|c| !c.is_empty()),
        "both processes worked: {:?}",
        per_process.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let all: Vec<JobId> = per_process.concat();
    let distinct: BTreeSet<JobId> = all.iter().copied().collect();
    assert_eq!(all.len(), JOBS, "no job was claimed twice");
    assert_eq!(distinct, ids, "every job was claimed");
    let done = pg.psql(
        "shared",
        "SELECT COUNT(*) FROM jobs WHERE state = 'done' AND lease_owner IS NULL",
    );
    assert_eq!(done.trim(), JOBS.to_string());
}

#[test]
fn a_dead_processes_job_is_taken_over_after_its_lease() {
    let pg = Postgres::start();
    let url = pg.create_database("takeover");
    let rt = runtime();
    let table = rt.block_on(open(&url, "observer")).unwrap();
    let id = rt
        .block_on(table.insert("commit", &json!({"transaction": "1.2.3"})))
        .unwrap();
    let mut holder = spawn_claimer(
        json!({"url": url, "node": "holder", "kind": "commit", "mode": "hold", "lease_ms": 10_000}),
    );
    // Read only up to this line: the holder keeps running (and its pipe open).
    let line = BufReader::new(holder.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .find(|l| l.contains("HOLDING "))
        .expect("the holder claimed the job");
    assert!(line.ends_with(&format!("HOLDING {id}")), "{line}");
    let held = rt.block_on(table.get(id)).unwrap().unwrap();
    assert_eq!(
        (held.state, held.owner.as_deref()),
        (JobState::Running, Some("holder"))
    );
    let lease_until = held.lease_until.unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();

    let taker = spawn_claimer(
        json!({"url": url, "node": "taker", "kind": "commit", "mode": "wait", "lease_ms": 60_000}),
    );
    let out = taker.wait_with_output().unwrap();
    assert!(out.status.success());
    let tried: Vec<i64> = lines_with(&out.stdout, "NOTHING AT ")
        .iter()
        .map(|w| w[0].parse().unwrap())
        .collect();
    let claimed = lines_with(&out.stdout, "CLAIMED ");
    assert_eq!(claimed.len(), 1, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(claimed[0][0], id.to_string());
    let at: i64 = claimed[0][2].parse().unwrap();
    assert!(
        tried.first().is_some_and(|&t| t < lease_until),
        "the taker asked while the lease ran ({tried:?} vs {lease_until})"
    );
    assert!(
        at >= lease_until,
        "taken at {at}, lease until {lease_until}"
    );
    let job = rt.block_on(table.get(id)).unwrap().unwrap();
    assert_eq!((job.state, job.owner), (JobState::Done, None));
}

fn get_json(url: &str) -> (u16, Value) {
    let rsp = http("GET", url, &[], b"").unwrap();
    (rsp.status, rsp.json())
}

/// The (node, state) of every stow job, as GET /jobs shows them.
fn stow_jobs(web: &str) -> Vec<Value> {
    let (status, body) = get_json(&format!("{web}/jobs?kind=stow&limit=1000"));
    assert_eq!(status, 200, "{body}");
    body["jobs"].as_array().unwrap().clone()
}

#[test]
fn two_pons_share_a_postgres_table() {
    let orthanc = Orthanc::start();
    let pg = Postgres::start();
    let url = pg.create_database("pons");
    let ct = testdata().ct(200);
    let (files_a, files_b) = (&ct.instances[..5], &ct.instances[5..10]);
    let paths = |set: &[Instance]| set.iter().map(|i| i.path.clone()).collect::<Vec<_>>();
    let uids = |set: &[Instance]| {
        set.iter()
            .map(|i| i.sop_instance.clone())
            .collect::<BTreeSet<_>>()
    };

    // A's archive is unreachable: what it acknowledges stays in its spool.
    let (state_a, state_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dead = format!("http://127.0.0.1:{}/dicom-web", free_port());
    let mut cfg_a = PonsConfig::new(&dead, state_a.path());
    cfg_a.jobs_url = url.clone();
    let mut cfg_b = PonsConfig::new(&orthanc.dicomweb_url(), state_b.path());
    cfg_b.jobs_url = url.clone();
    let mut a = Pons::start(&cfg_a.to_toml());
    let b = Pons::start(&cfg_b.to_toml());
    storescu("MODALITY", "PONS", a.dimse_port(), &paths(files_a), &[]).assert_success();
    storescu("MODALITY", "PONS", b.dimse_port(), &paths(files_b), &[]).assert_success();

    assert_eq!(orthanc.wait_for_instances(5, Duration::from_secs(60)), 5);
    let web_b = b.web_url().unwrap();
    let node = |jobs: &[Value], state: &str| {
        jobs.iter()
            .filter(|j| j["state"] == state)
            .map(|j| j["node"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    // B's web face shows A's jobs too: one table. A has tried and failed.
    assert!(wait_until(Duration::from_secs(30), || {
        let jobs = stow_jobs(&web_b);
        jobs.len() == 10
            && jobs
                .iter()
                .filter(|j| j["state"] != "done")
                .all(|j| j["attempts"].as_u64().unwrap() >= 1)
    }));
    let jobs = stow_jobs(&web_b);
    let done_nodes: BTreeSet<String> = node(&jobs, "done").into_iter().collect();
    assert_eq!(done_nodes.len(), 1);
    let node_b = done_nodes.into_iter().next().unwrap();
    assert!(node_b.ends_with(&state_b.path().join("spool").display().to_string()));
    let waiting: Vec<&Value> = jobs.iter().filter(|j| j["state"] != "done").collect();
    assert_eq!(waiting.len(), 5);
    let node_a = waiting[0]["node"].as_str().unwrap().to_owned();
    assert!(node_a.ends_with(&state_a.path().join("spool").display().to_string()));
    assert!(waiting.iter().all(|j| j["node"] == node_a.as_str()));

    // A dies. Its spooled files are on its disk: B must not take its jobs.
    a.kill9();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(orthanc.instance_uids(), uids(files_b));

    // A comes back, now with a reachable archive, and sends its own.
    cfg_a.upstream_url = orthanc.dicomweb_url();
    let a = Pons::start(&cfg_a.to_toml());
    assert_eq!(orthanc.wait_for_instances(10, Duration::from_secs(60)), 10);
    let mut all = uids(files_a);
    all.extend(uids(files_b));
    assert_eq!(orthanc.instance_uids(), all);
    assert!(wait_until(Duration::from_secs(10), || {
        let jobs = stow_jobs(&a.web_url().unwrap());
        node(&jobs, "done").len() == 10
    }));
    let jobs = stow_jobs(&a.web_url().unwrap());
    let mut nodes = node(&jobs, "done");
    nodes.sort();
    nodes.dedup();
    let mut expect = vec![node_a.clone(), node_b.clone()];
    expect.sort();
    assert_eq!(nodes, expect);

    operator_views(&a, &jobs);
}

/// GET /jobs, GET /jobs/{id} and `pons jobs` on the shared table, whose 10
/// stow jobs are done.
fn operator_views(pons: &Pons, jobs: &[Value]) {
    let web = pons.web_url().unwrap();
    let ids: Vec<i64> = jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let (status, three) = get_json(&format!("{web}/jobs?limit=3&state=done"));
    assert_eq!(status, 200);
    let three: Vec<i64> = three["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(three, ids[..3]);
    let (_, none) = get_json(&format!("{web}/jobs?state=failed"));
    assert_eq!(none, json!({"jobs": []}));

    let (status, one) = get_json(&format!("{web}/jobs/{}", ids[0]));
    assert_eq!(status, 200);
    assert_eq!(&one, &jobs[0]);
    assert_eq!(one["kind"], "stow");
    assert!(one["payload"]["sop_instance_uid"]
        .as_str()
        .unwrap()
        .starts_with("1."));
    assert_eq!(one["owner"], Value::Null);
    for (path, code, needle) in [
        ("/jobs/999999".to_owned(), 404, "no job 999999"),
        ("/jobs/abc".to_owned(), 400, "not a number"),
        ("/jobs?state=lost".to_owned(), 400, "state \"lost\""),
        ("/jobs?limit=0".to_owned(), 400, "limit"),
        ("/jobs?colour=red".to_owned(), 400, "colour"),
    ] {
        let (status, body) = get_json(&format!("{web}{path}"));
        assert_eq!(status, code, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }

    let config = pons.config_path().to_str().unwrap();
    let out = pons_cli(&[
        "jobs", "--config", config, "--kind", "stow", "--state", "done",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 11, "{text}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("STATE"));
    let listed: Vec<i64> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(listed, ids);
    assert!(lines[1..].iter().all(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w[1] == "stow" && w[2] == "done"
    }));

    let out = pons_cli(&["jobs", "show", &ids[0].to_string(), "--config", config]);
    assert!(out.status.success());
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&shown, &jobs[0]);
    let out = pons_cli(&["jobs", "show", "999999", "--config", config]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job 999999"));
    let out = pons_cli(&["jobs", "--state", "lost", "--config", config]);
    assert_eq!(out.status.code(), Some(2), "clap refuses the state");
}
