//! Bounded on-disk cache of instances retrieved from a PACS (direction B),
//! least recently used out.

use std::path::PathBuf;

pub struct Cache {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl Cache {
    pub fn open(dir: PathBuf, max_bytes: u64) -> std::io::Result<Cache> {
        std::fs::create_dir_all(&dir)?;
        Ok(Cache { dir, max_bytes })
    }
}
