//! C-MOVE to our own AE: the PACS opens a new association to our listener
//! and sends the instances as C-STORE requests carrying Move Originator AE
//! Title (0000,1030) and Move Originator Message ID (0000,1031). Each C-MOVE
//! we send waits here under a message id unique among the waiting ones, so
//! the sub-operations find their way to the request that asked for them.

use super::handler::StoreTarget;
use super::message::Command;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

struct Waiting {
    /// The PACS's AE title: the calling AE of the sub-operations.
    pacs_ae: String,
    target: Arc<dyn StoreTarget>,
}

pub struct MoveInbox {
    /// Our AE title: the Move Originator AE Title of our sub-operations.
    our_ae: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u16,
    waiting: HashMap<u16, Waiting>,
}

/// A registered C-MOVE; dropping it unregisters.
pub struct MoveTicket {
    inbox: Arc<MoveInbox>,
    pub message_id: u16,
}

impl Drop for MoveTicket {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.inbox.inner.lock() {
            inner.waiting.remove(&self.message_id);
        }
    }
}

impl MoveInbox {
    pub fn new(our_ae: &str) -> Arc<MoveInbox> {
        Arc::new(MoveInbox {
            our_ae: our_ae.trim().to_owned(),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Wait for the sub-operations of a C-MOVE sent to `pacs_ae`: returns
    /// the message id that C-MOVE must use. None when 65,535 moves wait.
    pub fn register(
        self: &Arc<Self>,
        pacs_ae: &str,
        target: Arc<dyn StoreTarget>,
    ) -> Option<MoveTicket> {
        let mut inner = self.inner.lock().ok()?;
        for _ in 0..=u16::MAX {
            inner.next_id = inner.next_id.wrapping_add(1).max(1);
            let id = inner.next_id;
            if let std::collections::hash_map::Entry::Vacant(e) = inner.waiting.entry(id) {
                e.insert(Waiting {
                    pacs_ae: pacs_ae.trim().to_owned(),
                    target,
                });
                return Some(MoveTicket {
                    inbox: self.clone(),
                    message_id: id,
                });
            }
        }
        None
    }

    /// The waiting C-MOVE an incoming C-STORE belongs to, if any.
    pub fn target_for(&self, calling_ae: &str, rq: &Command) -> Option<Arc<dyn StoreTarget>> {
        let inner = self.inner.lock().ok()?;
        match &rq.move_originator {
            Some((ae, id)) if ae.trim() == self.our_ae => {
                inner.waiting.get(id).map(|w| w.target.clone())
            }
            Some(_) => None,
            // A PACS that leaves the originator out: only unambiguous when a
            // single move to that PACS is waiting.
            None => {
                let mut from_caller = inner
                    .waiting
                    .values()
                    .filter(|w| w.pacs_ae == calling_ae.trim());
                match (from_caller.next(), from_caller.next()) {
                    (Some(w), None) => Some(w.target.clone()),
                    _ => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dimse::handler::{Refusal, StoreSink};
    use async_trait::async_trait;

    struct Named(&'static str);

    #[async_trait]
    impl StoreTarget for Named {
        async fn begin_store(&self, _: &Command, _: &str) -> Result<Box<dyn StoreSink>, Refusal> {
            Err(Refusal::new(0xC000, self.0))
        }
    }

    async fn name_of(t: Option<Arc<dyn StoreTarget>>) -> Option<String> {
        let t = t?;
        let rq = Command::c_store_rq(1, "1.2", "1.2.3");
        match t.begin_store(&rq, "1.2.840.10008.1.2").await {
            Err(r) => Some(r.comment),
            Ok(_) => None,
        }
    }

    fn sub_op(originator: Option<(&str, u16)>) -> Command {
        let mut rq = Command::c_store_rq(7, "1.2", "1.2.3");
        rq.move_originator = originator.map(|(a, i)| (a.to_owned(), i));
        rq
    }

    #[tokio::test]
    async fn routes_by_originator_and_unregisters_on_drop() {
        let inbox = MoveInbox::new("PONS");
        let a = inbox.register("PACS", Arc::new(Named("a"))).unwrap();
        let b = inbox.register("PACS", Arc::new(Named("b"))).unwrap();
        assert_ne!(a.message_id, b.message_id);
        let for_b = sub_op(Some(("PONS", b.message_id)));
        assert_eq!(
            name_of(inbox.target_for("PACS", &for_b)).await.as_deref(),
            Some("b")
        );
        // Another originator's sub-operation is not ours.
        let other = sub_op(Some(("OTHER", b.message_id)));
        assert!(inbox.target_for("PACS", &other).is_none());
        // Without an originator, two waiting moves are ambiguous…
        assert!(inbox.target_for("PACS", &sub_op(None)).is_none());
        drop(b);
        assert!(inbox.target_for("PACS", &for_b).is_none());
        // …one is not, but only for that PACS.
        assert_eq!(
            name_of(inbox.target_for("PACS", &sub_op(None)))
                .await
                .as_deref(),
            Some("a")
        );
        assert!(inbox.target_for("MODALITY", &sub_op(None)).is_none());
        drop(a);
    }
}
