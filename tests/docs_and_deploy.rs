//! The operators' documents and deployment files stay true to the code:
//! every key of config/pons.toml is in docs/ and every key docs/ names
//! exists; the deploy/ artifacts parse and agree with each other and with
//! the config (scripts/check-deploy.py, which also runs `pons check-config`
//! on their configs and `systemd-analyze verify` where it exists).

mod common;

use common::{repo_root, venv_python};
use std::collections::BTreeSet;

const TABLES: &[&str] = &[
    "dimse", "web", "upstream", "route", "spool", "jobs", "ae", "pacs", "cache", "audit",
];

/// Every key config/pons.toml shows, set or commented out, as a dotted path
/// (`web.tls.cert`, `ae.title`, `upstream.auth.token_url`), and its tables.
fn config_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(repo_root().join("config/pons.toml")).unwrap();
    let (mut keys, mut tables) = (BTreeSet::new(), BTreeSet::new());
    let mut table = String::new();
    let mut in_auth = false;
    for line in text.lines() {
        // "# key = …" with at most one space after '#' is a key; wider
        // indentation continues the line above.
        let bare = line
            .strip_prefix('#')
            .map_or(line, |l| l.strip_prefix(' ').unwrap_or(l));
        if bare.starts_with(' ') {
            if in_auth {
                add_inner(&mut keys, &format!("{table}.auth"), bare);
            }
            continue;
        }
        let head = bare.split('#').next().unwrap().trim();
        if head.starts_with('[') {
            table = head.trim_matches(|c| c == '[' || c == ']').to_owned();
            tables.insert(table.clone());
            in_auth = false;
            continue;
        }
        let Some((key, value)) = bare.split_once('=') else {
            in_auth = false;
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        keys.insert(format!("{table}.{key}"));
        in_auth = key == "auth";
        if in_auth {
            add_inner(&mut keys, &format!("{table}.auth"), value);
        }
    }
    (keys, tables)
}

/// `name = ` inside an inline table (and its "or token = …" comment).
fn add_inner(keys: &mut BTreeSet<String>, prefix: &str, text: &str) {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '{' || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        if pair[1] == "=" && pair[0].chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.insert(format!("{prefix}.{}", pair[0]));
        }
    }
}

/// Backticked dotted paths in docs/*.md that start with a table name.
fn documented_keys() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(repo_root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, piece) in text.split('`').enumerate() {
            let dotted = i % 2 == 1
                && piece.contains('.')
                && piece
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
                && TABLES.contains(&piece.split('.').next().unwrap());
            if dotted {
                found.insert(piece.to_owned());
            }
        }
    }
    found
}

#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    let (keys, tables) = config_keys();
    assert!(
        keys.contains("web.tls.cert") && keys.contains("upstream.auth.token_url"),
        "{keys:?}"
    );
    let documented = documented_keys();
    let missing: Vec<_> = keys.iter().filter(|k| !documented.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "keys of config/pons.toml not in docs/: {missing:?}"
    );
    let unknown: Vec<_> = documented
        .iter()
        .filter(|k| !keys.contains(*k) && !tables.contains(*k))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/ names keys config/pons.toml does not have: {unknown:?}"
    );
}

#[test]
fn deployment_files_agree_with_each_other_and_the_config() {
    let out = std::process::Command::new(venv_python())
        .arg(repo_root().join("scripts/check-deploy.py"))
        .arg(env!("CARGO_BIN_EXE_pons"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-deploy.py:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
