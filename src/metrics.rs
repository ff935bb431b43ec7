//! Prometheus metrics, rendered at `GET /metrics` (admin permission when
//! `[web.auth]` is not `none`). One `pons_` prefix, base units, `_total`
//! counters; labels name services, routes and peers' AE titles, never UIDs
//! or patient data. Gauges of state (jobs, spool, cache, pools) are read
//! when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallingAe {
    /// A known (`[[ae]]`, `[[pacs]]`) title, else `other`: a flood of made-up
    /// titles must not make a flood of series.
    pub calling_ae: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DimseOp {
    pub service: &'static str,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Service {
    pub service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRequest {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRoute {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamOp {
    pub operation: &'static str,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Pacs {
    pub pacs: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub kind: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Face {
    pub face: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
}

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

/// 5 ms to ~80 s.
fn timings() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

pub struct Metrics {
    pub associations_accepted: Family<CallingAe, Counter>,
    pub associations_rejected: Family<Reason, Counter>,
    pub associations_active: Gauge,
    pub dimse_operations: Family<DimseOp, Counter>,
    pub dimse_duration: Timings<Service>,
    pub http_requests: Family<HttpRequest, Counter>,
    pub http_duration: Timings<HttpRoute>,
    pub upstream_requests: Family<UpstreamOp, Counter>,
    pub upstream_duration: Timings<Operation>,
    pub pool_associations: Family<Pacs, Gauge>,
    pub pool_waiting: Family<Pacs, Gauge>,
    pub pacs_busy: Family<Pacs, Counter>,
    pub spool_backlog_instances: Gauge,
    pub spool_backlog_bytes: Gauge,
    pub spool_oldest_age: Gauge,
    pub spool_failures: Counter,
    pub jobs: Family<JobLabels, Gauge>,
    pub cache_bytes: Gauge,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub tls_handshake_failures: Family<Face, Counter>,
    pub auth_failures: Family<Reason, Counter>,
    registry: Registry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            associations_accepted: Family::default(),
            associations_rejected: Family::default(),
            associations_active: Gauge::default(),
            dimse_operations: Family::default(),
            dimse_duration: Family::new_with_constructor(timings),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(timings),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(timings),
            pool_associations: Family::default(),
            pool_waiting: Family::default(),
            pacs_busy: Family::default(),
            spool_backlog_instances: Gauge::default(),
            spool_backlog_bytes: Gauge::default(),
            spool_oldest_age: Gauge::default(),
            spool_failures: Counter::default(),
            jobs: Family::default(),
            cache_bytes: Gauge::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            tls_handshake_failures: Family::default(),
            auth_failures: Family::default(),
            registry: Registry::with_prefix("pons"),
        };
        let mut r = Registry::with_prefix("pons");
        let build = Family::<Build, Gauge>::default();
        build
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "Pons's version", build);
        r.register(
            "associations_accepted",
            "DIMSE associations accepted, by calling AE title",
            m.associations_accepted.clone(),
        );
        r.register(
            "associations_rejected",
            "DIMSE associations refused, by reason",
            m.associations_rejected.clone(),
        );
        r.register(
            "associations_active",
            "DIMSE associations open now",
            m.associations_active.clone(),
        );
        r.register(
            "dimse_operations",
            "DIMSE operations answered, by service and status class",
            m.dimse_operations.clone(),
        );
        r.register_with_unit(
            "dimse_operation_duration",
            "From request to final response",
            Unit::Seconds,
            m.dimse_duration.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "From request to response head",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests to the DICOMweb origin, by operation and status",
            m.upstream_requests.clone(),
        );
        r.register_with_unit(
            "upstream_request_duration",
            "From request to response head",
            Unit::Seconds,
            m.upstream_duration.clone(),
        );
        r.register(
            "pacs_pool_associations",
            "Associations open to each PACS",
            m.pool_associations.clone(),
        );
        r.register(
            "pacs_pool_waiting",
            "Requests waiting for an association to each PACS",
            m.pool_waiting.clone(),
        );
        r.register(
            "pacs_busy",
            "Requests answered 503 because a PACS or its pool was full",
            m.pacs_busy.clone(),
        );
        r.register(
            "spool_backlog_instances",
            "Acknowledged instances not yet in the archive",
            m.spool_backlog_instances.clone(),
        );
        r.register_with_unit(
            "spool_backlog",
            "Bytes of acknowledged instances not yet in the archive",
            Unit::Bytes,
            m.spool_backlog_bytes.clone(),
        );
        r.register_with_unit(
            "spool_oldest_age",
            "Age of the oldest instance waiting in the spool",
            Unit::Seconds,
            m.spool_oldest_age.clone(),
        );
        r.register(
            "spool_failures",
            "Spooled instances the archive refused for good",
            m.spool_failures.clone(),
        );
        r.register(
            "jobs",
            "Jobs in the job table, by kind and state",
            m.jobs.clone(),
        );
        r.register_with_unit(
            "cache",
            "Bytes of retrieved instances cached",
            Unit::Bytes,
            m.cache_bytes.clone(),
        );
        r.register(
            "cache_hits",
            "Instances served from the cache",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Instances the cache had to retrieve",
            m.cache_misses.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by face",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "auth_failures",
            "HTTP requests refused by [web.auth], by reason",
            m.auth_failures.clone(),
        );
        Metrics { registry: r, ..m }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn dimse_finished(
        &self,
        service: &'static str,
        status_class: &'static str,
        took: Duration,
    ) {
        self.dimse_operations
            .get_or_create(&DimseOp {
                service,
                status_class,
            })
            .inc();
        self.dimse_duration
            .get_or_create(&Service { service })
            .observe(took.as_secs_f64());
    }

    pub fn rejected(&self, reason: &'static str) {
        self.associations_rejected
            .get_or_create(&Reason { reason })
            .inc();
    }

    pub fn tls_failed(&self, face: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&Face { face })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    /// The families docs/operations.md lists, under those names.
    #[test]
    fn every_documented_family_is_exported() {
        let text = super::get().render();
        for family in [
            "pons_build_info gauge",
            "pons_associations_accepted counter",
            "pons_associations_rejected counter",
            "pons_associations_active gauge",
            "pons_dimse_operations counter",
            "pons_dimse_operation_duration_seconds histogram",
            "pons_http_requests counter",
            "pons_http_request_duration_seconds histogram",
            "pons_upstream_requests counter",
            "pons_upstream_request_duration_seconds histogram",
            "pons_pacs_pool_associations gauge",
            "pons_pacs_pool_waiting gauge",
            "pons_pacs_busy counter",
            "pons_spool_backlog_instances gauge",
            "pons_spool_backlog_bytes gauge",
            "pons_spool_oldest_age_seconds gauge",
            "pons_spool_failures counter",
            "pons_jobs gauge",
            "pons_cache_bytes gauge",
            "pons_cache_hits counter",
            "pons_cache_misses counter",
            "pons_tls_handshake_failures counter",
            "pons_auth_failures counter",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "{family}\n{text}"
            );
        }
    }
}
