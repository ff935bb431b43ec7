//! A file written through a memory block. Writes are gathered up to 1 MiB and
//! go to disk in one blocking-pool hop; the last block and whatever must
//! follow it (fsync, rename) share one more. A C-STORE waits on every step,
//! and a hop per PDV costs more than the I/O itself. The file is created by
//! the first block, so memory stays bounded whatever the instance size.
//! Dropped before [`WriteBehind::finish`], the partial file is deleted.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const BLOCK: usize = 1 << 20;

pub struct WriteBehind {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
}

impl WriteBehind {
    /// A file to be created at `path` (which must not exist yet).
    pub fn new(path: PathBuf) -> WriteBehind {
        WriteBehind {
            path,
            file: None,
            buf: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.buf.capacity() == 0 {
            // One block up front: no reallocating copies as an instance grows.
            self.buf.reserve(BLOCK + data.len());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BLOCK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Everything written so far goes into the file, not necessarily durable.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        let (path, file, mut buf) = (self.path.clone(), self.file.take(), self.take_buf());
        let (file, buf) = blocking(move || {
            let file = write_out(&path, file, &buf)?;
            buf.clear();
            Ok((file, buf))
        })
        .await?;
        self.file = Some(file);
        self.buf = buf;
        Ok(())
    }

    /// The rest of the data, then `then(file, path)`, in one blocking hop.
    /// On error the caller decides what becomes of the file at `path`.
    pub async fn finish<T: Send + 'static>(
        mut self,
        then: impl FnOnce(File, &Path) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let (path, file, buf) = (self.path.clone(), self.file.take(), self.take_buf());
        blocking(move || then(write_out(&path, file, &buf)?, &path)).await
    }

    fn take_buf(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a partial file");
            }
        }
    }
}

fn write_out(path: &Path, file: Option<File>, buf: &[u8]) -> std::io::Result<File> {
    let mut file = match file {
        Some(f) => f,
        None => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?,
    };
    file.write_all(buf)?;
    Ok(file)
}

/// Run blocking file work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}
