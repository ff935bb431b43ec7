use super::*;

fn parse(s: &str) -> Config {
    toml::from_str(s).unwrap()
}

const MINIMAL: &str = r#"
    [dimse]
    ae_title = "PONS"
    listen = "127.0.0.1:11112"
    [upstream]
    url = "http://127.0.0.1:8042/dicom-web"
    [spool]
    dir = "/tmp/spool"
    [jobs]
    url = "sqlite:///tmp/jobs.db"
"#;

#[test]
fn minimal_config_is_valid() {
    let c = parse(MINIMAL);
    assert_eq!(c.validate(), Vec::<String>::new());
    assert_eq!(c.spool.mode, SpoolMode::Spool);
    assert_eq!(c.upstream[0].stow_batch, 50);
    assert_eq!(c.upstream[0].name, "default");
}

#[test]
fn unknown_keys_are_rejected() {
    let err = toml::from_str::<Config>(&format!("{MINIMAL}\n[dimse2]\nx=1\n")).unwrap_err();
    assert!(err.to_string().contains("dimse2"), "{err}");
}

#[test]
fn every_problem_is_reported() {
    let c = parse(
        r#"
        [dimse]
        ae_title = "THIS TITLE IS FAR TOO LONG"
        listen = "127.0.0.1:11112"
        max_pdu = 10
        [upstream]
        url = "ftp://x"
        stow_batch = 0
        [jobs]
        url = "memory"
        [[ae]]
        title = "A"
        host = "h"
        port = 1
        [[ae]]
        title = "A"
        host = ""
        port = 1
    "#,
    );
    let problems = c.validate();
    assert_eq!(problems.len(), 7, "{problems:#?}");
}

#[test]
fn job_table_urls() {
    let with = |jobs: &str| parse(&MINIMAL.replace("url = \"sqlite:///tmp/jobs.db\"", jobs));
    assert!(
        with("url = \"postgres://pons@db.example/pons\"\nnode = \"gw1\"")
            .validate()
            .is_empty()
    );
    assert!(with("url = \"postgresql://pons:pw@db/pons\"")
        .validate()
        .is_empty());
    let bad = with("url = \"mysql://u:pw@db/pons\"\nnode = \" \"").validate();
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(
        bad[0].contains("u:***@db") && !bad[0].contains("pw"),
        "{bad:#?}"
    );
    assert!(bad[1].contains("jobs.node"), "{bad:#?}");
}

#[test]
fn shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pons.toml");
    let c = Config::load(&path).unwrap();
    assert_eq!(c.dimse.ae_title, "PONS");
}

#[test]
fn limits_default_and_are_checked() {
    let c = parse(MINIMAL);
    assert_eq!(c.web.limits.max_connections, 512);
    assert_eq!(c.dimse.max_sub_operations, 100_000);
    let c = parse(&MINIMAL.replace(
        "[upstream]",
        "max_sub_operations = 0\n[web.limits]\nmax_header_bytes = 1000\nstow_max_parts = 0\n[upstream]",
    ));
    let problems = c.validate();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems
        .iter()
        .any(|p| p.contains("max_header_bytes is 1000")));
}

#[test]
fn ae_services_and_move_destinations() {
    let c = parse(&format!(
        "{MINIMAL}\n[[ae]]\ntitle = \"CT\"\nhost = \"h\"\nport = 1\nservices = [\"store\", \"move\"]\n\
         move_destinations = [\"CT\", \"NOWHERE\"]\n"
    ));
    let ae = &c.ae[0];
    assert!(ae.may(Service::Store) && !ae.may(Service::Find));
    assert!(ae.may_move_to("CT ") && !ae.may_move_to("WS"));
    let problems = c.validate();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("\"NOWHERE\""), "{problems:#?}");
    let bad = toml::from_str::<Config>(&format!(
        "{MINIMAL}\n[[ae]]\ntitle = \"CT\"\nhost = \"h\"\nport = 1\nservices = [\"print\"]\n"
    ));
    assert!(bad.unwrap_err().to_string().contains("print"));
}

#[test]
fn urls_carrying_secrets_must_be_https_unless_local() {
    use super::auth::secure_or_loopback as ok;
    assert!(ok("https://idp.example.org/keys"));
    assert!(ok("http://127.0.0.1:8080/keys"));
    assert!(ok("http://localhost/token"));
    assert!(ok("http://[::1]:9000/token"));
    assert!(!ok("http://idp.example.org/keys"));
    assert!(!ok("http://127.0.0.1.evil.org/keys"));
    assert!(!ok("ftp://127.0.0.1/keys"));
}

const ROUTED: &str = r#"
    [dimse]
    ae_title = "PONS"
    listen = "127.0.0.1:11112"
    [[upstream]]
    name = "clinical"
    url = "http://127.0.0.1:8042/dicom-web"
    [[upstream]]
    name = "research"
    url = "http://127.0.0.1:8043/dicom-web"
    upstream_typo = 1
    [spool]
    dir = "/tmp/spool"
    [jobs]
    url = "sqlite:///tmp/jobs.db"
"#;

#[test]
fn upstream_lists_and_routes_are_checked() {
    // A typo inside one [[upstream]] is named.
    let err = toml::from_str::<Config>(ROUTED).unwrap_err();
    assert!(err.to_string().contains("upstream_typo"), "{err}");
    let base = ROUTED.replace("upstream_typo = 1\n", "");
    let c = parse(&base);
    assert_eq!(c.upstream.len(), 2);
    let problems = c.validate();
    assert!(
        problems.iter().any(|p| p.contains("need [[route]]")),
        "{problems:?}"
    );

    let routed = format!(
        "{base}
        [[route]]
        called_ae = \"CT_ARCHIVE\"
        upstream = \"clinical\"
        [[route]]
        called_ae = \"RESEARCH\"
        upstream = \"research\"
        [[route]]
        called_ae = \"CT_ARCHIVE\"
        upstream = \"research\"
        sop_class = [\"1.2.840.10008.5.1.4.1.1.88.22\"]
        "
    );
    assert_eq!(parse(&routed).validate(), Vec::<String>::new());

    let wrong = format!(
        "{base}
        [[route]]
        called_ae = \"CT_ARCHIVE\"
        upstream = \"clinic\"
        [[route]]
        called_ae = \"MR_ONLY\"
        upstream = \"research\"
        modality = [\"MR\"]
        "
    );
    let problems = parse(&wrong).validate();
    let has = |s: &str| problems.iter().any(|p| p.contains(s));
    assert!(has("names upstream \"clinic\""), "{problems:?}");
    assert!(has("MR_ONLY needs one [[route]] without"), "{problems:?}");
    assert!(
        has("upstream \"clinical\" is used by no [[route]]"),
        "{problems:?}"
    );
}
