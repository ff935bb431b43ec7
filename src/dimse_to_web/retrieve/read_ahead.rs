//! A WADO-RS answer read ahead of the C-STORE sub-operations: while the
//! receiver of instance n stores it and answers, instance n+1 is already
//! coming off the origin. At most [`READ_AHEAD_KIB`] are held.

use crate::web::client::{FileMetaInfo, RetrievedParts, UpstreamError};
use bytes::Bytes;
use std::sync::Arc;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

const READ_AHEAD_KIB: u32 = 8 * 1024;

enum Item {
    /// A part begins; its file meta group, or why it is not an instance.
    Start(Result<FileMetaInfo, UpstreamError>),
    /// Data set bytes; the permit returns their room when they are sent.
    Chunk(Bytes, OwnedSemaphorePermit),
    /// The part ended, or broke off.
    End(Option<UpstreamError>),
    /// The answer broke off between parts.
    Broken(UpstreamError),
}

pub(super) struct ReadAhead {
    rx: Arc<Mutex<mpsc::Receiver<Item>>>,
    reader: JoinHandle<()>,
}

/// What [`ReadAhead::next_part`] found.
pub(super) enum Next {
    Part(Result<FileMetaInfo, UpstreamError>),
    Broken(UpstreamError),
    End,
}

impl ReadAhead {
    pub fn start(mut parts: RetrievedParts) -> ReadAhead {
        let (tx, rx) = mpsc::channel(256);
        let room = Arc::new(Semaphore::new(READ_AHEAD_KIB as usize));
        let reader = tokio::spawn(async move {
            loop {
                let mut part = match parts.next_part().await {
                    Ok(Some(p)) => p,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Item::Broken(e)).await;
                        return;
                    }
                };
                let meta = part.file_meta().await;
                let is_instance = meta.is_ok();
                if tx.send(Item::Start(meta)).await.is_err() {
                    return;
                }
                if !is_instance {
                    continue;
                }
                let end = loop {
                    match part.chunk().await {
                        Ok(Some(b)) => {
                            let kib = (b.len() / 1024 + 1).min(READ_AHEAD_KIB as usize) as u32;
                            let Ok(permit) = room.clone().acquire_many_owned(kib).await else {
                                return;
                            };
                            if tx.send(Item::Chunk(b, permit)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(e),
                    }
                };
                if tx.send(Item::End(end)).await.is_err() {
                    return;
                }
            }
        });
        ReadAhead {
            rx: Arc::new(Mutex::new(rx)),
            reader,
        }
    }

    /// The next part's file meta group; the rest of the previous part, if
    /// its body was not read to the end, is skipped.
    pub async fn next_part(&mut self) -> Next {
        let mut rx = self.rx.lock().await;
        loop {
            match rx.recv().await {
                Some(Item::Start(meta)) => return Next::Part(meta),
                Some(Item::Chunk(..)) | Some(Item::End(_)) => continue,
                Some(Item::Broken(e)) => return Next::Broken(e),
                None => return Next::End,
            }
        }
    }

    /// The data set of the part [`Self::next_part`] just returned.
    pub fn body(&self) -> impl AsyncRead + Send + Unpin + 'static {
        let rx = self.rx.clone();
        let chunks = futures::stream::unfold(Some(rx), |rx| async move {
            let rx = rx?;
            let item = rx.lock().await.recv().await;
            match item {
                Some(Item::Chunk(b, _permit)) => Some((Ok(b), Some(rx))),
                Some(Item::End(Some(e))) => Some((Err(std::io::Error::other(e)), None)),
                _ => None,
            }
        });
        tokio_util::io::StreamReader::new(Box::pin(chunks))
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
