//! A bounded, reused set of associations to one peer.
//!
//! - At most `max_associations` are open at once, whatever they are for:
//!   a PACS that takes eight associations is never asked for a ninth.
//! - Work beyond that waits in a fair (first come, first served) queue for
//!   up to `queue_timeout`, then fails with [`DimseError::Busy`]: the caller
//!   answers "try again" at once instead of hanging.
//! - An association goes back to the idle list only after an operation on
//!   it ended cleanly ([`Pooled::done`]); it is handed out again only for
//!   presentation contexts it already has, only while the peer has not
//!   closed it, and it is released once idle for longer than `idle`, or
//!   as soon as work of another kind needs a new association.
//!
//! Associations hold slots on the PACS (Orthanc serves DicomThreadsCount
//! at once and queues the rest), so `max_associations` should stay within
//! what the PACS serves.

use super::client::{Proposal, ScuAssociation, ScuConfig};
use super::DimseError;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    pub max_associations: usize,
    pub idle: Duration,
    pub queue_timeout: Duration,
}

/// What an association was negotiated with: proposals and, for C-GET, the
/// storage classes we take the SCP role for.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub proposals: Vec<Proposal>,
    pub scp_classes: Vec<String>,
}

impl Shape {
    pub fn new(proposals: Vec<Proposal>) -> Shape {
        Shape {
            proposals,
            scp_classes: Vec::new(),
        }
    }

    /// Does an association negotiated as `self` serve `wanted`? Only when
    /// proposed alike: an extra context changes what a peer may send (an
    /// as-stored context lets a C-GET meant to convert come compressed).
    fn serves(&self, wanted: &Shape) -> bool {
        let same = |a: &Proposal, b: &Proposal| {
            a.abstract_syntax == b.abstract_syntax && a.transfer_syntaxes == b.transfer_syntaxes
        };
        self.proposals.len() == wanted.proposals.len()
            && self
                .proposals
                .iter()
                .zip(&wanted.proposals)
                .all(|(a, b)| same(a, b))
            && self.scp_classes == wanted.scp_classes
    }
}

struct Idle {
    assoc: ScuAssociation,
    shape: Shape,
    since: Instant,
}

pub struct Pool {
    /// The `[[pacs]]` name, for the metrics.
    name: crate::metrics::Pacs,
    scu: ScuConfig,
    config: PoolConfig,
    /// One permit per association in use; idle ones hold none.
    in_use: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    pub fn new(name: &str, scu: ScuConfig, config: PoolConfig) -> Arc<Pool> {
        let config = PoolConfig {
            max_associations: config.max_associations.max(1),
            ..config
        };
        let pool = Arc::new(Pool {
            name: crate::metrics::Pacs {
                pacs: name.to_owned(),
            },
            scu,
            config,
            in_use: Arc::new(Semaphore::new(config.max_associations)),
            idle: Mutex::new(Vec::new()),
        });
        tokio::spawn(reap(Arc::downgrade(&pool)));
        pool
    }

    pub fn scu(&self) -> &ScuConfig {
        &self.scu
    }

    /// Associations open now, in use or idle.
    pub fn open(&self) -> usize {
        let in_use = self.config.max_associations - self.in_use.available_permits();
        in_use + self.idle.lock().map_or(0, |idle| idle.len())
    }

    /// Set this pool's gauges (when the metrics are scraped).
    pub fn report(&self) {
        let m = crate::metrics::get();
        let open = i64::try_from(self.open()).unwrap_or(i64::MAX);
        m.pool_associations.get_or_create(&self.name).set(open);
    }

    /// An association of `shape`: an idle one negotiated alike, or a new
    /// one. Waits its turn for up to `queue_timeout`.
    pub async fn get(self: &Arc<Self>, shape: Shape) -> Result<Pooled, DimseError> {
        let deadline = Instant::now() + self.config.queue_timeout;
        let metrics = crate::metrics::get();
        let waiting = metrics.pool_waiting.get_or_create(&self.name).clone();
        waiting.inc();
        // Counted down even when the waiter gives up (its request was dropped).
        struct Waiting(prometheus_client::metrics::gauge::Gauge);
        impl Drop for Waiting {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let in_line = Waiting(waiting);
        let permit = tokio::time::timeout(
            self.config.queue_timeout,
            self.in_use.clone().acquire_owned(),
        )
        .await;
        drop(in_line);
        let permit = permit
            .map_err(|_| {
                metrics.pacs_busy.get_or_create(&self.name).inc();
                DimseError::Busy {
                    peer: self.peer(),
                    detail: format!(
                        "all {} associations are in use; waited {} s",
                        self.config.max_associations,
                        self.config.queue_timeout.as_secs()
                    ),
                }
            })?
            .expect("the semaphore is never closed");
        let (reusable, surplus) = self.take_idle(&shape);
        for a in surplus {
            release(a).await;
        }
        if let Some(idle) = reusable {
            return Ok(self.pooled(idle.assoc, idle.shape, permit, true));
        }
        // A PACS that takes fewer associations than we may open refuses the
        // rest as transient: ask again, within the same wait.
        let mut pause = Duration::from_millis(50);
        loop {
            let connect =
                ScuAssociation::connect_with_roles(&self.scu, &shape.proposals, &shape.scp_classes);
            match connect.await {
                Err(DimseError::Busy { .. }) if Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    if matches!(e, DimseError::Busy { .. }) {
                        metrics.pacs_busy.get_or_create(&self.name).inc();
                    }
                    return Err(e);
                }
                Ok(assoc) => return Ok(self.pooled(assoc, shape, permit, false)),
            }
        }
    }

    fn pooled(
        self: &Arc<Self>,
        assoc: ScuAssociation,
        shape: Shape,
        permit: OwnedSemaphorePermit,
        reused: bool,
    ) -> Pooled {
        Pooled {
            assoc: Some(assoc),
            shape,
            pool: self.clone(),
            reused,
            _permit: permit,
        }
    }

    /// With a permit in hand: an idle association of `shape` (alive), and
    /// the idle ones to close (stale, closed by the peer, or, when a new
    /// association must open, all the others).
    fn take_idle(&self, shape: &Shape) -> (Option<Idle>, Vec<ScuAssociation>) {
        let mut idle = self.lock();
        let mut surplus = Vec::new();
        let mut i = 0;
        while i < idle.len() {
            let stale = idle[i].since.elapsed() > self.config.idle;
            if stale || idle[i].assoc.peer_closed() {
                surplus.push(idle.remove(i).assoc);
            } else {
                i += 1;
            }
        }
        // Most recently used first: the least likely to have been closed.
        let found = idle
            .iter()
            .rposition(|a| a.shape.serves(shape))
            .map(|i| idle.remove(i));
        if found.is_none() {
            // A new association: the idle ones serve other work, and each
            // holds a slot on the PACS that may be the one we need (Orthanc
            // serves DicomThreadsCount at once and queues the rest until an
            // idle one times out there). Work of one kind keeps its own.
            surplus.extend(idle.drain(..).map(|a| a.assoc));
        }
        (found, surplus)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peer(&self) -> String {
        format!("{}@{}", self.scu.called_ae, self.scu.address)
    }
}

/// Release idle associations past their time, until the pool is gone.
async fn reap(pool: Weak<Pool>) {
    loop {
        let Some(every) = pool
            .upgrade()
            .map(|p| (p.config.idle / 2).max(Duration::from_millis(100)))
        else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let stale: Vec<_> = {
            let mut idle = pool.lock();
            let (keep, stale) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|a| a.since.elapsed() <= pool.config.idle);
            *idle = keep;
            stale
        };
        drop(pool);
        for a in stale {
            release(a.assoc).await;
        }
    }
}

/// A-RELEASE, bounded: a peer that does not answer is simply dropped.
async fn release(assoc: ScuAssociation) {
    let _ = tokio::time::timeout(Duration::from_secs(2), assoc.release()).await;
}

/// An association lent by the pool. Dropped without [`Pooled::done`] (an
/// error, a cancelled request) it is aborted, never handed out again.
pub struct Pooled {
    assoc: Option<ScuAssociation>,
    shape: Shape,
    pool: Arc<Pool>,
    /// Came from the idle list: a failure before any answer may only mean
    /// the peer had closed it meanwhile.
    pub reused: bool,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    /// The operation ended cleanly: keep the association for the next one.
    pub fn done(mut self) {
        if let Some(assoc) = self.assoc.take() {
            self.pool.lock().push(Idle {
                assoc,
                shape: std::mem::take(&mut self.shape),
                since: Instant::now(),
            });
        }
    }

    /// Back to the pool after a clean end, aborted after a failure.
    pub async fn finish(self, ok: bool) {
        if ok {
            self.done()
        } else {
            self.abort().await
        }
    }

    /// A-RELEASE, not to be reused (the peer may still send on it).
    pub async fn release(mut self) {
        if let Some(a) = self.assoc.take() {
            release(a).await;
        }
    }

    /// The operation failed: A-ABORT now.
    pub async fn abort(mut self) {
        if let Some(a) = self.assoc.take() {
            let _ = a.abort().await;
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(a) = self.assoc.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = a.abort().await;
                });
            }
        }
    }
}

impl Deref for Pooled {
    type Target = ScuAssociation;
    fn deref(&self) -> &ScuAssociation {
        self.assoc.as_ref().expect("present until done or dropped")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut ScuAssociation {
        self.assoc.as_mut().expect("present until done or dropped")
    }
}
