//! Bounded on-disk cache of instances retrieved from a PACS (direction B),
//! least recently used out.
//!
//! Layout under `dir`: `data/{study}/{series}/{sop}.{s|e}.dcm` (PS3.10 files;
//! `s` = as the PACS stores it, `e` = converted to Explicit VR Little Endian
//! by the PACS), `data/{study}/members` (the instances of the study as its
//! last full retrieval found them), `tmp/` (files being written; renamed
//! into place only once complete, so a half-written file is never served).
//! Files are not fsynced: a `clean` marker written on orderly shutdown tells
//! the next start that the files are whole; after a crash the cache starts
//! empty. The index is rebuilt from the directory tree at start.

mod index;

use crate::dicom::uid;
use crate::write_behind::WriteBehind;
use index::{Entry, Index};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Which copy of an instance a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// In the transfer syntax the PACS stores it in.
    Stored,
    /// Converted to Explicit VR Little Endian by the PACS.
    ExplicitLe,
}

impl Variant {
    fn suffix(self) -> &'static str {
        match self {
            Variant::Stored => "s",
            Variant::ExplicitLe => "e",
        }
    }

    fn from_suffix(s: &str) -> Option<Variant> {
        match s {
            "s" => Some(Variant::Stored),
            "e" => Some(Variant::ExplicitLe),
            _ => None,
        }
    }
}

/// The UIDs that place an instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceUids {
    pub study: String,
    pub series: String,
    pub sop_instance: String,
}

/// A PS3.10 file in the cache. While this handle lives the file is not
/// evicted, so it can be opened and read by path.
#[derive(Debug, Clone)]
pub struct CachedInstance {
    pub path: PathBuf,
    pub uids: InstanceUids,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    /// File size in bytes (preamble and file meta included).
    pub size: u64,
    pub variant: Variant,
    _pin: Arc<()>,
}

pub struct Cache {
    pub dir: PathBuf,
    pub max_bytes: u64,
    index: Mutex<Index>,
}

impl Cache {
    /// Open (or create) the cache in `dir` and rebuild its index.
    pub fn open(dir: PathBuf, max_bytes: u64) -> std::io::Result<Cache> {
        let data = dir.join("data");
        let tmp = dir.join("tmp");
        let clean = dir.join("clean");
        if data.exists() && !clean.exists() {
            warn!(dir = %dir.display(), "cache was not closed cleanly; starting it empty");
            std::fs::remove_dir_all(&data)?;
        }
        let _ = std::fs::remove_file(&clean);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(&tmp)?;
        let index = Index::rebuild(&data)?;
        info!(
            dir = %dir.display(),
            instances = index.len(),
            mb = index.total() / (1024 * 1024),
            "cache opened"
        );
        let cache = Cache {
            dir,
            max_bytes,
            index: Mutex::new(index),
        };
        cache.evict();
        Ok(cache)
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.lock().total()
    }

    /// Orderly shutdown: the files on disk are whole, the next start keeps them.
    pub fn mark_clean(&self) {
        if let Err(e) = std::fs::write(self.dir.join("clean"), b"") {
            warn!(error = %e, "cannot write the cache's clean marker");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path_of(&self, uids: &InstanceUids, variant: Variant) -> PathBuf {
        self.dir
            .join("data")
            .join(&uids.study)
            .join(&uids.series)
            .join(format!("{}.{}.dcm", uids.sop_instance, variant.suffix()))
    }

    fn handle(&self, key: &(String, Variant), e: &Entry) -> CachedInstance {
        CachedInstance {
            path: self.path_of(&e.uids, key.1),
            uids: e.uids.clone(),
            sop_class_uid: e.sop_class_uid.clone(),
            transfer_syntax: e.transfer_syntax.clone(),
            size: e.size,
            variant: key.1,
            _pin: e.pin.clone(),
        }
    }

    /// The instance in that variant, if cached (and now most recently used).
    pub fn get(&self, sop_instance_uid: &str, variant: Variant) -> Option<CachedInstance> {
        let key = (sop_instance_uid.to_owned(), variant);
        let handle = {
            let mut index = self.lock();
            let e = index.touch(&key)?;
            self.handle(&key, &e)
        };
        // Deleted behind our back (a cleanup by hand): forget it.
        if !handle.path.exists() {
            warn!(path = %handle.path.display(), "cache file vanished");
            self.lock().remove(&key);
            return None;
        }
        Some(handle)
    }

    /// A new file in `tmp/`.
    pub fn begin(&self) -> WriteBehind {
        WriteBehind::new(self.tmp_path())
    }

    fn tmp_path(&self) -> PathBuf {
        let name = uuid::Uuid::new_v4().simple().to_string();
        self.dir.join("tmp").join(name)
    }

    /// Move a completely written file into place (replacing an older copy)
    /// and evict least recently used files beyond the size limit.
    pub async fn commit(
        &self,
        pending: WriteBehind,
        uids: InstanceUids,
        sop_class_uid: String,
        transfer_syntax: String,
        variant: Variant,
    ) -> std::io::Result<CachedInstance> {
        if !uid::is_valid(&uids.study)
            || !uid::is_valid(&uids.series)
            || !uid::is_valid(&uids.sop_instance)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "instance has an invalid study, series or SOP instance UID",
            ));
        }
        let dest = self.path_of(&uids, variant);
        let size = pending
            .finish(move |file, tmp| {
                let size = file.metadata()?.len();
                drop(file);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(tmp, &dest)?;
                Ok(size)
            })
            .await?;
        let key = (uids.sop_instance.clone(), variant);
        let entry = Entry::new(uids, sop_class_uid, transfer_syntax, size);
        let handle = {
            let mut index = self.lock();
            let e = index.insert(key.clone(), entry);
            self.handle(&key, &e)
        };
        self.evict();
        Ok(handle)
    }

    /// Least recently used, unpinned files out until the total fits.
    fn evict(&self) {
        let victims = self.lock().evict_to(self.max_bytes);
        for (uids, variant) in victims {
            let path = self.path_of(&uids, variant);
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(error = %e, path = %path.display(), "cannot evict a cache file");
            }
        }
    }

    fn members_file(&self, study: &str, series: Option<&str>) -> PathBuf {
        let mut dir = self.dir.join("data").join(study);
        if let Some(se) = series {
            dir = dir.join(se);
        }
        dir.join(index::MEMBERS)
    }

    /// Remember the instances of a study (or of one series) as a full
    /// retrieval found them: (series, SOP instance) pairs.
    pub fn record_members(&self, study: &str, series: Option<&str>, members: Vec<InstanceUids>) {
        if !uid::is_valid(study) || series.is_some_and(|s| !uid::is_valid(s)) {
            return;
        }
        let file = self.members_file(study, series);
        let text: String = members
            .iter()
            .map(|m| format!("{} {}\n", m.series, m.sop_instance))
            .collect();
        let tmp = self.tmp_path();
        let written = std::fs::create_dir_all(file.parent().unwrap_or(&self.dir))
            .and_then(|_| std::fs::write(&tmp, text))
            .and_then(|_| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            warn!(error = %e, "cannot record a study's members in the cache");
        }
        self.lock().set_members(study, series, members);
    }

    /// The instances of a study (of one series, when given) as the last full
    /// retrieval of the study or that series found them.
    pub fn members(&self, study: &str, series: Option<&str>) -> Option<Vec<InstanceUids>> {
        self.lock().members(study, series)
    }

    /// Forget what a study holds (it changed: a STOW added to it).
    pub fn forget_members(&self, study: &str) {
        let series = self.lock().forget_members(study);
        if uid::is_valid(study) {
            let _ = std::fs::remove_file(self.members_file(study, None));
            for se in series {
                let _ = std::fs::remove_file(self.members_file(study, Some(&se)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
