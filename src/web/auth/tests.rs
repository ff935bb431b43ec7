use super::*;
use crate::config::{TokenEntry, UserEntry};

#[test]
fn each_route_needs_its_permission() {
    let (get, post) = (Method::GET, Method::POST);
    let need = |m: &Method, path: &str, route: &str| required(m, path, Some(route));
    assert_eq!(required(&get, "/healthz", None), None);
    assert_eq!(required(&get, "/readyz", None), None);
    assert_eq!(need(&get, "/jobs", "/jobs"), Some(Permission::Admin));
    assert_eq!(need(&get, "/jobs/7", "/jobs/{id}"), Some(Permission::Admin));
    assert_eq!(
        need(&get, "/dicom-web/studies", "/dicom-web/studies"),
        Some(Permission::Read)
    );
    let head = Method::HEAD;
    assert_eq!(
        need(&head, "/dicom-web/studies/1", "/dicom-web/studies/{study}"),
        Some(Permission::Read)
    );
    assert_eq!(
        need(&post, "/dicom-web/studies", "/dicom-web/studies"),
        Some(Permission::Write)
    );
    let commit = "/dicom-web/commitment-requests/{uid}";
    assert_eq!(
        need(&post, "/dicom-web/commitment-requests/1.2", commit),
        Some(Permission::Commit)
    );
    assert_eq!(
        need(&get, "/dicom-web/commitment-requests/1.2", commit),
        Some(Permission::Commit)
    );
    // A path that merely contains the words is not the commitment route.
    let bulk = "/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/{*path}";
    assert_eq!(
        need(
            &get,
            "/dicom-web/studies/1/series/2/instances/3/bulkdata/commitment-requests",
            bulk
        ),
        Some(Permission::Read)
    );
    let pacs_named_so = "/pacs/commitment-requests/dicom-web/studies";
    assert_eq!(
        need(&get, pacs_named_so, pacs_named_so),
        Some(Permission::Read)
    );
}

#[tokio::test]
async fn bearer_tokens_are_known_by_their_hash_only() {
    let auth = Authenticator::new(&WebAuth::Bearer {
        tokens: vec![TokenEntry {
            name: "viewer".into(),
            sha256: hash_secret("s3cret-token", true).unwrap(),
            permissions: vec![Permission::Read],
        }],
    })
    .unwrap();
    let who = auth
        .identify(Some("Bearer s3cret-token"))
        .await
        .ok()
        .unwrap();
    assert_eq!(who.subject, "viewer");
    assert_eq!(who.permissions, [Permission::Read].into_iter().collect());
    assert!(auth.identify(Some("bearer s3cret-token")).await.is_ok());
    for wrong in [
        None,
        Some("Bearer nope"),
        Some("Basic s3cret-token"),
        Some("Bearer "),
    ] {
        assert!(matches!(
            auth.identify(wrong).await,
            Err(Denied::Unauthenticated(_))
        ));
    }
}

#[tokio::test]
async fn basic_accepts_argon2_and_bcrypt_hashes() {
    let users = vec![
        UserEntry {
            username: "alice".into(),
            password_hash: hash_secret("correct horse", false).unwrap(),
            permissions: vec![Permission::Read, Permission::Write],
        },
        UserEntry {
            username: "bob".into(),
            password_hash: bcrypt::hash("battery staple", 4).unwrap(),
            permissions: vec![Permission::Admin],
        },
    ];
    let auth = Authenticator::new(&WebAuth::Basic { users }).unwrap();
    let b64 = |s: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    for _ in 0..2 {
        // The second round comes from the remembered verifications.
        let alice = auth
            .identify(Some(&b64("alice:correct horse")))
            .await
            .ok()
            .unwrap();
        assert!(alice.permissions.contains(&Permission::Write));
        let bob = auth
            .identify(Some(&b64("bob:battery staple")))
            .await
            .ok()
            .unwrap();
        assert_eq!(bob.subject, "bob");
    }
    for wrong in ["alice:battery staple", "bob:", "carol:x", "alice"] {
        assert!(auth.identify(Some(&b64(wrong))).await.is_err(), "{wrong}");
    }
    assert!(auth.identify(Some("Basic !!!")).await.is_err());
}
