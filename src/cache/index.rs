//! The cache's in-memory index: entries by (SOP Instance UID, variant),
//! recency order, total size, and the known members of studies and series.

use super::{InstanceUids, Variant};
use crate::dicom::uid;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

pub const MEMBERS: &str = "members";

type Key = (String, Variant);

#[derive(Debug, Clone)]
pub struct Entry {
    pub uids: InstanceUids,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub size: u64,
    /// Handles hold clones: more than one reference means "being read".
    pub pin: Arc<()>,
    last_used: u64,
}

impl Entry {
    pub fn new(
        uids: InstanceUids,
        sop_class_uid: String,
        transfer_syntax: String,
        size: u64,
    ) -> Entry {
        Entry {
            uids,
            sop_class_uid,
            transfer_syntax,
            size,
            pin: Arc::new(()),
            last_used: 0,
        }
    }
}

#[derive(Default)]
struct StudyMembers {
    /// Every instance of the study, when a study retrieval completed.
    whole: Option<Vec<InstanceUids>>,
    /// Per series, when a series retrieval completed.
    series: HashMap<String, Vec<InstanceUids>>,
}

#[derive(Default)]
pub struct Index {
    entries: HashMap<Key, Entry>,
    by_use: BTreeMap<u64, Key>,
    tick: u64,
    total: u64,
    studies: HashMap<String, StudyMembers>,
}

impl Index {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Read the tree `data/{study}/{series}/{sop}.{variant}.dcm`; the oldest
    /// files count as least recently used.
    pub fn rebuild(data: &Path) -> std::io::Result<Index> {
        let mut found = Vec::new();
        let mut index = Index::default();
        for study in dirs(data)? {
            let study_uid = study.file_name().unwrap_or_default().to_string_lossy();
            if let Some(m) = read_members(&study.join(MEMBERS)) {
                index.set_members(&study_uid, None, m);
            }
            for series in dirs(&study)? {
                let series_uid = series.file_name().unwrap_or_default().to_string_lossy();
                if let Some(m) = read_members(&series.join(MEMBERS)) {
                    index.set_members(&study_uid, Some(&series_uid), m);
                }
                for file in std::fs::read_dir(&series)? {
                    let path = file?.path();
                    match read_entry(&path, &study_uid, &series_uid) {
                        Some((key, entry, mtime)) => found.push((mtime, key, entry)),
                        None if path.is_file() && path.file_name() != Some(MEMBERS.as_ref()) => {
                            // Not ours or unreadable: it cannot be served.
                            let _ = std::fs::remove_file(&path);
                        }
                        None => {}
                    }
                }
            }
        }
        found.sort_by_key(|(mtime, _, _)| *mtime);
        for (_, key, entry) in found {
            index.insert(key, entry);
        }
        Ok(index)
    }

    pub fn remove(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.by_use.remove(&e.last_used);
            self.total -= e.size;
        }
    }

    /// Mark as most recently used; a copy of the entry.
    pub fn touch(&mut self, key: &Key) -> Option<Entry> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.get_mut(key)?;
        self.by_use.remove(&e.last_used);
        e.last_used = tick;
        self.by_use.insert(tick, key.clone());
        Some(e.clone())
    }

    /// Add or replace; returns the entry as stored.
    pub fn insert(&mut self, key: Key, mut entry: Entry) -> Entry {
        if let Some(old) = self.entries.remove(&key) {
            self.by_use.remove(&old.last_used);
            self.total -= old.size;
            // Readers of the old file keep it pinned until they are done.
            entry.pin = old.pin;
        }
        self.tick += 1;
        entry.last_used = self.tick;
        self.by_use.insert(self.tick, key.clone());
        self.total += entry.size;
        self.entries.insert(key, entry.clone());
        entry
    }

    /// Remove least recently used entries nobody reads until `total <= max`;
    /// returns what to delete.
    pub fn evict_to(&mut self, max: u64) -> Vec<(InstanceUids, Variant)> {
        let mut excess = self.total.saturating_sub(max);
        let mut picked = Vec::new();
        for key in self.by_use.values() {
            if excess == 0 {
                break;
            }
            match self.entries.get(key) {
                Some(e) if Arc::strong_count(&e.pin) == 1 => {
                    excess = excess.saturating_sub(e.size);
                    picked.push(key.clone());
                }
                _ => {}
            }
        }
        picked
            .into_iter()
            .filter_map(|key| {
                let e = self.entries.remove(&key)?;
                self.by_use.remove(&e.last_used);
                self.total -= e.size;
                Some((e.uids, key.1))
            })
            .collect()
    }

    pub fn set_members(&mut self, study: &str, series: Option<&str>, m: Vec<InstanceUids>) {
        let s = self.studies.entry(study.to_owned()).or_default();
        match series {
            None => s.whole = Some(m),
            Some(se) => {
                s.series.insert(se.to_owned(), m);
            }
        }
    }

    pub fn members(&self, study: &str, series: Option<&str>) -> Option<Vec<InstanceUids>> {
        let s = self.studies.get(study)?;
        match series {
            None => s.whole.clone(),
            Some(se) => s.series.get(se).cloned().or_else(|| {
                let all = s.whole.as_ref()?;
                let of_series: Vec<_> = all.iter().filter(|m| m.series == se).cloned().collect();
                (!of_series.is_empty()).then_some(of_series)
            }),
        }
    }

    /// Drop a study's member lists; returns the series that had one.
    pub fn forget_members(&mut self, study: &str) -> Vec<String> {
        self.studies
            .remove(study)
            .map(|s| s.series.into_keys().collect())
            .unwrap_or_default()
    }
}

fn dirs(path: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(path)? {
        let p = d?.path();
        if p.is_dir() {
            out.push(p);
        }
    }
    Ok(out)
}

fn read_members(path: &Path) -> Option<Vec<InstanceUids>> {
    let text = std::fs::read_to_string(path).ok()?;
    let study = path.parent()?;
    // data/{study}/members or data/{study}/{series}/members
    let study_uid = match study.parent()?.file_name()? {
        n if n == "data" => study.file_name()?,
        _ => study.parent()?.file_name()?,
    }
    .to_string_lossy()
    .into_owned();
    text.lines()
        .map(|l| {
            let (series, sop) = l.split_once(' ')?;
            (uid::is_valid(series) && uid::is_valid(sop)).then(|| InstanceUids {
                study: study_uid.clone(),
                series: series.to_owned(),
                sop_instance: sop.to_owned(),
            })
        })
        .collect()
}

/// An entry from a file name and its file meta group.
fn read_entry(
    path: &Path,
    study: &str,
    series: &str,
) -> Option<(Key, Entry, std::time::SystemTime)> {
    let name = path.file_name()?.to_str()?.strip_suffix(".dcm")?;
    let (sop, variant) = name.rsplit_once('.')?;
    let variant = Variant::from_suffix(variant)?;
    if !uid::is_valid(sop) || !uid::is_valid(study) || !uid::is_valid(series) {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let md = file.metadata().ok()?;
    let mut reader = std::io::BufReader::new(file);
    std::io::Read::read_exact(&mut reader, &mut [0u8; 128]).ok()?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(&mut reader).ok()?;
    let uids = InstanceUids {
        study: study.to_owned(),
        series: series.to_owned(),
        sop_instance: sop.to_owned(),
    };
    let entry = Entry::new(
        uids,
        uid::trim(meta.media_storage_sop_class_uid()).to_owned(),
        uid::trim(meta.transfer_syntax()).to_owned(),
        md.len(),
    );
    Some((
        (sop.to_owned(), variant),
        entry,
        md.modified().unwrap_or(std::time::UNIX_EPOCH),
    ))
}
