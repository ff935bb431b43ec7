use super::*;
use crate::config::{TokenEntry, UserEntry};

#[test]
fn each_route_needs_its_permission() {
    let get = Method::GET;
    let post = Method::POST;
    assert_eq!(required(&get, "/healthz"), None);
    assert_eq!(required(&get, "/readyz"), None);
    assert_eq!(required(&get, "/jobs"), Some(Permission::Admin));
    assert_eq!(required(&get, "/jobs/7"), Some(Permission::Admin));
    assert_eq!(required(&get, "/dicom-web/studies"), Some(Permission::Read));
    assert_eq!(
        required(&Method::HEAD, "/dicom-web/studies/1"),
        Some(Permission::Read)
    );
    assert_eq!(
        required(&post, "/dicom-web/studies"),
        Some(Permission::Write)
    );
    assert_eq!(
        required(&post, "/pacs/b/dicom-web/studies/1.2"),
        Some(Permission::Write)
    );
    assert_eq!(
        required(&post, "/dicom-web/commitment-requests/1.2"),
        Some(Permission::Commit)
    );
    assert_eq!(
        required(&get, "/dicom-web/commitment-requests/1.2"),
        Some(Permission::Commit)
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
