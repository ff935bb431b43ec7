//! One retrieval shared by every request that needs it: eight viewers
//! opening the same cold study cause one C-GET, and each gets every instance
//! as it lands, from the first (a request for a series or an instance of a
//! study already coming in joins it too). The C-GET is cancelled only when
//! no request wants it any more.

use super::{Event, Scope};
use crate::cache::{CachedInstance, Variant};
use crate::dimse::client::RetrieveOutcome;
use crate::web_to_dimse::WebError;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One retrieval in progress and what it has delivered so far.
pub(super) struct Flight {
    scope: Scope,
    variant: Variant,
    events: Mutex<Vec<Event>>,
    /// How many events there are, for those waiting for the next.
    count: watch::Sender<usize>,
    /// Requests reading it; changed only under the registry's lock.
    holders: Mutex<usize>,
    pub(super) cancel: CancellationToken,
}

impl Flight {
    /// Hand an event to every reader, present and future.
    pub(super) fn push(&self, event: Event) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.push(event);
        self.count.send_replace(events.len());
    }

    fn covers(&self, scope: &Scope, variant: Variant) -> bool {
        let within = match (&self.scope, scope) {
            (Scope::Study(a), s) => a == s.study(),
            (Scope::Series(a, b), s) => a == s.study() && Some(b.as_str()) == s.series(),
            (own, s) => own == s,
        };
        within && self.variant == variant && !self.cancel.is_cancelled()
    }
}

/// The retrievals in progress towards one PACS.
#[derive(Default)]
pub struct Flights(Mutex<Vec<Arc<Flight>>>);

impl Flights {
    /// A reader of a retrieval covering `scope`: one in progress, or a new
    /// one, which the caller must then start (the flight is returned).
    pub(super) fn join(
        self: &Arc<Self>,
        scope: &Scope,
        variant: Variant,
    ) -> (Retrieval, Option<Arc<Flight>>) {
        let mut all = self.lock();
        let (flight, new) = match all.iter().find(|f| f.covers(scope, variant)) {
            Some(f) => (f.clone(), false),
            None => {
                let f = Arc::new(Flight {
                    scope: scope.clone(),
                    variant,
                    events: Mutex::new(Vec::new()),
                    count: watch::channel(0).0,
                    holders: Mutex::new(0),
                    cancel: CancellationToken::new(),
                });
                all.push(f.clone());
                (f, true)
            }
        };
        *flight.holders.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let reader = Retrieval {
            rx: flight.count.subscribe(),
            flight: flight.clone(),
            flights: self.clone(),
            scope: scope.clone(),
            next: 0,
            outcome: None,
            ended: false,
        };
        (reader, new.then_some(flight))
    }

    /// The retrieval has ended: later requests start their own (the cache
    /// holds what it brought).
    pub(super) fn land(&self, flight: &Arc<Flight>) {
        self.lock().retain(|f| !Arc::ptr_eq(f, flight));
    }

    fn leave(&self, flight: &Arc<Flight>) {
        let mut all = self.lock();
        let mut holders = flight.holders.lock().unwrap_or_else(|p| p.into_inner());
        *holders -= 1;
        if *holders == 0 {
            flight.cancel.cancel();
            all.retain(|f| !Arc::ptr_eq(f, flight));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Flight>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request's view of a retrieval; dropping the last cancels it (C-CANCEL).
pub struct Retrieval {
    flight: Arc<Flight>,
    flights: Arc<Flights>,
    rx: watch::Receiver<usize>,
    /// What this request asked for: a study's retrieval carries more.
    scope: Scope,
    next: usize,
    outcome: Option<RetrieveOutcome>,
    /// The final event has been read: nothing more will come.
    ended: bool,
}

impl Retrieval {
    /// The next instance of our scope to land; None once the PACS has finished.
    pub async fn next(&mut self) -> Option<Result<CachedInstance, WebError>> {
        while !self.ended {
            let event = {
                let events = self.flight.events.lock().unwrap_or_else(|p| p.into_inner());
                events.get(self.next).cloned()
            };
            let Some(event) = event else {
                // The flight holds the sender: this ends only with an event.
                let _ = self.rx.changed().await;
                continue;
            };
            self.next += 1;
            match event {
                Event::Landed(c) if self.scope.contains(&c.uids) => return Some(Ok(c)),
                Event::Landed(_) => {}
                Event::Done(Ok(outcome)) => {
                    self.outcome = Some(outcome);
                    self.ended = true;
                }
                Event::Done(Err(e)) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }

    /// The PACS's final word, once `next` gave None.
    pub fn outcome(&self) -> Option<&RetrieveOutcome> {
        self.outcome.as_ref()
    }
}

impl Drop for Retrieval {
    fn drop(&mut self) {
        self.flights.leave(&self.flight);
    }
}
