//! The request body, read by a task of its own:
//!
//! - ahead of the parts being stored, so that the client keeps sending
//!   while the PACS answers a C-STORE (at most [`READ_AHEAD`] chunks wait);
//! - to its very end, even after the closing boundary or an early answer:
//!   a body left unread makes the server close the connection, and the
//!   client, still sending or reading, sees a reset instead of our answer.
//!   Past the consumer, at most [`DRAIN_BYTES`] more are read and dropped.

use axum::body::Body;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks are handed on in pieces of at most this size (hyper's are up to
/// 400 KiB). multer's buffer grows by doubling while much of it is unread:
/// with whole chunks, 300 CT slices took Pons to 150-350 MB of RSS.
pub(super) const PIECE: usize = 64 * 1024;
/// Pieces read ahead: 1 MiB.
const READ_AHEAD: usize = 16;
/// What is read and dropped after the consumer stopped, and for how long.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

pub(super) struct Pump {
    task: JoinHandle<()>,
}

/// The body's chunks as they come, and the task that reads them.
pub(super) fn pump(body: Body) -> (impl Stream<Item = Result<Bytes, axum::Error>>, Pump) {
    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    let task = tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        let mut dropped = 0;
        while let Some(mut chunk) = chunks.next().await {
            if chunk.is_err() {
                // The body is over (stalled, cut off): nothing more to drain.
                let _ = tx.send(chunk).await;
                return;
            }
            if tx.is_closed() {
                dropped += chunk.map_or(0, |c| c.len());
                if dropped > DRAIN_BYTES {
                    return;
                }
                continue;
            }
            while let Ok(c) = &mut chunk {
                if c.len() <= PIECE {
                    break;
                }
                let piece = c.split_to(PIECE);
                if tx.send(Ok(piece)).await.is_err() {
                    break;
                }
            }
            // A consumer gone in the meantime leaves the rest unsent.
            let _ = tx.send(chunk).await;
        }
    });
    let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (chunks, Pump { task })
}

impl Pump {
    /// Waits (a bounded time) until the body has been read to its end;
    /// drop the chunk stream first.
    pub async fn finish(self) {
        let abort = self.task.abort_handle();
        if tokio::time::timeout(DRAIN_TIME, self.task).await.is_err() {
            abort.abort();
        }
    }
}
