//! Which upstream archive a request goes to, by the AE title the modality
//! called (`[[route]]`): queries and retrieves to the called AE's first
//! route without conditions; a C-STORE to every route of the called AE
//! whose conditions (calling AE, Modality, SOP class) it meets.

use crate::config::{RouteConfig, UpstreamConfig};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

#[derive(Debug, Clone)]
struct Route {
    called_ae: String,
    upstream: usize,
    calling_ae: Vec<String>,
    modality: Vec<String>,
    sop_class: Vec<String>,
}

impl Route {
    fn is_conditional(&self) -> bool {
        !(self.calling_ae.is_empty() && self.modality.is_empty() && self.sop_class.is_empty())
    }
}

/// What a C-STORE is routed by.
pub struct StoreFacts<'a> {
    pub calling_ae: &'a str,
    pub sop_class_uid: &'a str,
    pub modality: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

fn trimmed(list: &[String]) -> Vec<String> {
    list.iter().map(|s| s.trim().to_owned()).collect()
}

impl Router {
    /// Routes by upstream index. `our_ae` goes to the first upstream unless
    /// a route names it. Assumes a validated configuration.
    pub fn new(our_ae: &str, upstreams: &[UpstreamConfig], routes: &[RouteConfig]) -> Router {
        let index = |name: &str| upstreams.iter().position(|u| u.name == name).unwrap_or(0);
        let mut out: Vec<Route> = routes
            .iter()
            .map(|r| Route {
                called_ae: r.called_ae.trim().to_owned(),
                upstream: index(&r.upstream),
                calling_ae: trimmed(&r.calling_ae),
                modality: trimmed(&r.modality),
                sop_class: trimmed(&r.sop_class),
            })
            .collect();
        if !out.iter().any(|r| r.called_ae == our_ae.trim()) {
            out.push(Route {
                called_ae: our_ae.trim().to_owned(),
                upstream: 0,
                calling_ae: vec![],
                modality: vec![],
                sop_class: vec![],
            });
        }
        Router { routes: out }
    }

    /// Every AE title we answer to.
    pub fn called_titles(&self) -> Vec<String> {
        let mut titles: Vec<String> = Vec::new();
        for r in &self.routes {
            if !titles.contains(&r.called_ae) {
                titles.push(r.called_ae.clone());
            }
        }
        titles
    }

    /// The archive answering a called AE's queries and retrieves.
    pub fn primary(&self, called_ae: &str) -> Option<usize> {
        self.routes
            .iter()
            .find(|r| r.called_ae == called_ae.trim() && !r.is_conditional())
            .map(|r| r.upstream)
    }

    /// Does routing a C-STORE to this called AE need the data set's Modality?
    pub fn needs_modality(&self, called_ae: &str) -> bool {
        self.routes
            .iter()
            .any(|r| r.called_ae == called_ae.trim() && !r.modality.is_empty())
    }

    /// Every archive a C-STORE goes to, each once, the primary first.
    pub fn store_targets(&self, called_ae: &str, facts: &StoreFacts) -> Vec<usize> {
        let mut out: Vec<usize> = self.primary(called_ae).into_iter().collect();
        let holds = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v.trim()))
        };
        for r in &self.routes {
            if r.called_ae == called_ae.trim()
                && holds(&r.calling_ae, Some(facts.calling_ae))
                && holds(&r.sop_class, Some(facts.sop_class_uid))
                && holds(&r.modality, facts.modality)
                && !out.contains(&r.upstream)
            {
                out.push(r.upstream);
            }
        }
        out
    }

    /// Every archive a called AE may send instances to (for storage commitment).
    pub fn archives_of(&self, called_ae: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self.primary(called_ae).into_iter().collect();
        for r in &self.routes {
            if r.called_ae == called_ae.trim() && !out.contains(&r.upstream) {
                out.push(r.upstream);
            }
        }
        out
    }
}

/// Where the last instances were stored to, for storage commitment to ask
/// exactly those archives. In memory and bounded: an instance stored before
/// a restart, or long ago, is looked for where its called AE, calling AE
/// and SOP class route it (routes by Modality then cannot be told).
pub struct RoutedLog {
    cap: usize,
    seen: Mutex<Seen>,
}

/// The archives by instance, and the instances oldest first.
type Seen = (HashMap<String, Vec<usize>>, VecDeque<String>);

impl RoutedLog {
    pub fn new(cap: usize) -> RoutedLog {
        RoutedLog {
            cap,
            seen: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    pub fn record(&self, sop_instance_uid: &str, targets: &[usize]) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let (map, order) = &mut *seen;
        if map
            .insert(sop_instance_uid.to_owned(), targets.to_vec())
            .is_none()
        {
            order.push_back(sop_instance_uid.to_owned());
        }
        while order.len() > self.cap {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    pub fn get(&self, sop_instance_uid: &str) -> Option<Vec<usize>> {
        self.seen.lock().ok()?.0.get(sop_instance_uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str) -> UpstreamConfig {
        let toml = format!("name = {name:?}\nurl = \"http://127.0.0.1:1/dicom-web\"");
        toml::from_str(&toml).unwrap()
    }

    fn route(called: &str, upstream: &str, modality: &[&str], class: &[&str]) -> RouteConfig {
        RouteConfig {
            called_ae: called.into(),
            upstream: upstream.into(),
            calling_ae: vec![],
            modality: modality.iter().map(|s| s.to_string()).collect(),
            sop_class: class.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn called_titles_choose_archives_and_conditions_add_more() {
        const SR: &str = "1.2.840.10008.5.1.4.1.1.88.22";
        const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
        let upstreams = [upstream("clinical"), upstream("research")];
        let router = Router::new(
            "PONS",
            &upstreams,
            &[
                route("CT_ARCHIVE", "clinical", &[], &[]),
                route("CT_ARCHIVE", "research", &[], &[SR]),
                route("RESEARCH", "research", &[], &[]),
                route("RESEARCH", "clinical", &["MR"], &[]),
            ],
        );
        assert_eq!(router.called_titles(), ["CT_ARCHIVE", "RESEARCH", "PONS"]);
        assert_eq!(router.primary("CT_ARCHIVE"), Some(0));
        assert_eq!(router.primary("RESEARCH"), Some(1));
        assert_eq!(router.primary("PONS"), Some(0));
        assert_eq!(router.primary("NOBODY"), None);
        let facts = |class, modality| StoreFacts {
            calling_ae: "CT1",
            sop_class_uid: class,
            modality,
        };
        assert_eq!(
            router.store_targets("CT_ARCHIVE", &facts(CT, Some("CT"))),
            [0]
        );
        assert_eq!(
            router.store_targets("CT_ARCHIVE", &facts(SR, Some("SR"))),
            [0, 1]
        );
        assert_eq!(
            router.store_targets("RESEARCH", &facts(CT, Some("MR"))),
            [1, 0]
        );
        assert_eq!(router.store_targets("RESEARCH", &facts(CT, None)), [1]);
        assert!(router.needs_modality("RESEARCH") && !router.needs_modality("CT_ARCHIVE"));
        assert_eq!(router.archives_of("CT_ARCHIVE"), [0, 1]);
    }

    #[test]
    fn the_routed_log_forgets_the_oldest() {
        let log = RoutedLog::new(2);
        log.record("1", &[0]);
        log.record("2", &[0, 1]);
        log.record("2", &[0, 1]);
        log.record("3", &[1]);
        assert_eq!(log.get("1"), None);
        assert_eq!(log.get("2"), Some(vec![0, 1]));
        assert_eq!(log.get("3"), Some(vec![1]));
    }
}
