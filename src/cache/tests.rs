use super::*;
use crate::dicom::part10::file_header;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const ELE: &str = "1.2.840.10008.1.2.1";

fn uids(n: u32) -> InstanceUids {
    InstanceUids {
        study: "1.2.3".into(),
        series: format!("1.2.3.{}", n % 2),
        sop_instance: format!("1.2.3.4.{n}"),
    }
}

/// A file of about `size` bytes: a real PS3.10 head, then filler.
async fn put(cache: &Cache, n: u32, size: usize, variant: Variant) -> CachedInstance {
    let u = uids(n);
    let mut f = cache.begin();
    let head = file_header(CT, &u.sop_instance, ELE, "PACS").unwrap();
    f.write(&head).await.unwrap();
    f.write(&vec![0u8; size - head.len()]).await.unwrap();
    cache
        .commit(f, u, CT.into(), ELE.into(), variant)
        .await
        .unwrap()
}

fn tmp_files(cache: &Cache) -> usize {
    std::fs::read_dir(cache.dir.join("tmp")).unwrap().count()
}

#[tokio::test]
async fn committed_files_are_served_and_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().to_owned(), 100 << 20).unwrap();
    // Bigger than the write-behind block, so it is written in pieces.
    let a = put(&cache, 1, 3 << 20, Variant::Stored).await;
    assert_eq!(std::fs::metadata(&a.path).unwrap().len(), 3 << 20);
    assert_eq!(a.size, 3 << 20);
    assert!(cache.get("1.2.3.4.1", Variant::Stored).is_some());
    assert!(cache.get("1.2.3.4.1", Variant::ExplicitLe).is_none());
    cache.record_members("1.2.3", None, vec![uids(1)]);
    cache.record_members("1.2.3", Some("1.2.3.1"), vec![uids(1)]);
    assert_eq!(tmp_files(&cache), 0);
    cache.mark_clean();
    drop(cache);

    let cache = Cache::open(dir.path().to_owned(), 100 << 20).unwrap();
    let b = cache.get("1.2.3.4.1", Variant::Stored).unwrap();
    assert_eq!(b.path, a.path);
    assert_eq!(b.transfer_syntax, ELE);
    assert_eq!(b.sop_class_uid, CT);
    assert_eq!(b.uids, uids(1));
    assert_eq!(cache.members("1.2.3", None), Some(vec![uids(1)]));
    assert_eq!(cache.members("1.2.3", Some("1.2.3.1")), Some(vec![uids(1)]));
    assert_eq!(cache.members("1.2.3", Some("1.2.3.0")), None);
    cache.forget_members("1.2.3");
    assert_eq!(cache.members("1.2.3", None), None);
    drop(cache);

    // No clean marker (a crash): nothing is trusted.
    let cache = Cache::open(dir.path().to_owned(), 100 << 20).unwrap();
    assert!(cache.get("1.2.3.4.1", Variant::Stored).is_none());
}

#[tokio::test]
async fn uncommitted_files_vanish() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().to_owned(), 100 << 20).unwrap();
    let mut f = cache.begin();
    f.write(&vec![1u8; 2 << 20]).await.unwrap();
    assert_eq!(tmp_files(&cache), 1);
    drop(f);
    assert_eq!(tmp_files(&cache), 0);
}

#[tokio::test]
async fn least_recently_used_unread_files_leave_first() {
    let dir = tempfile::tempdir().unwrap();
    let mb = 1 << 20;
    let cache = Cache::open(dir.path().to_owned(), 3 * mb).unwrap();
    let first = put(&cache, 1, mb as usize, Variant::Stored).await.path;
    let second = put(&cache, 2, mb as usize, Variant::Stored).await;
    let third = put(&cache, 3, mb as usize, Variant::ExplicitLe).await;
    // 1 becomes the most recently used, but 2 and 3 are being read.
    assert!(cache.get("1.2.3.4.1", Variant::Stored).is_some());
    put(&cache, 4, mb as usize, Variant::Stored).await;
    assert!(cache.get("1.2.3.4.1", Variant::Stored).is_none());
    assert!(!first.exists());
    assert!(second.path.exists() && third.path.exists());
    // Once 2 is no longer read, it is the least recently used.
    drop(second);
    put(&cache, 5, mb as usize, Variant::Stored).await;
    assert!(cache.get("1.2.3.4.2", Variant::Stored).is_none());
    assert!(cache.get("1.2.3.4.3", Variant::ExplicitLe).is_some());
    assert!(cache.get("1.2.3.4.5", Variant::Stored).is_some());
}
