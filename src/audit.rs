//! The audit log (`[audit] file`): one JSON line per operation that touches
//! patient data, in the spirit of IHE ATNA: who (calling AE and address, or
//! the token's subject), what (service, study), the outcome, and when. It is
//! the only place such operations are listed with their study; the ordinary
//! log never carries patient data at info level.

use crate::dimse::message::CommandField;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A file to append to, or `"stderr"`.
    pub file: String,
}

static SINK: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();

/// Start writing events; once per process.
pub fn open(config: &AuditConfig) -> anyhow::Result<()> {
    let sink: Box<dyn Write + Send> = if config.file == "stderr" {
        Box::new(std::io::stderr())
    } else {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.file)
            .map_err(|e| anyhow::anyhow!("cannot open audit.file {}: {e}", config.file))?;
        Box::new(file)
    };
    let _ = SINK.set(Mutex::new(sink));
    Ok(())
}

pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Who asked.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Who<'a> {
    Dimse {
        calling_ae: &'a str,
        peer: String,
        association: u64,
    },
    Web {
        subject: &'a str,
        peer: String,
    },
}

#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub service: &'a str,
    pub study: Option<&'a str>,
    /// `success`, `warning`, `refused` (not authenticated or not permitted),
    /// `cancelled` or `failure`.
    pub outcome: &'a str,
    /// The DIMSE status (hex) or HTTP status.
    pub status: String,
    #[serde(flatten)]
    pub who: Who<'a>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    face: &'static str,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

pub fn record(event: &Event) {
    let Some(sink) = SINK.get() else { return };
    let line = Line {
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        face: match event.who {
            Who::Dimse { .. } => "dimse",
            Who::Web { .. } => "web",
        },
        event,
    };
    let Ok(mut text) = serde_json::to_vec(&line) else {
        return;
    };
    text.push(b'\n');
    let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = sink.write_all(&text).and_then(|()| sink.flush()) {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}

/// The service a DIMSE request names, for events.
pub fn dimse_service(field: CommandField) -> &'static str {
    match field {
        CommandField::CStoreRq => "C-STORE",
        CommandField::CFindRq => "C-FIND",
        CommandField::CGetRq => "C-GET",
        CommandField::CMoveRq => "C-MOVE",
        CommandField::NActionRq => "storage commitment (N-ACTION)",
        CommandField::NEventReportRq => "storage commitment (N-EVENT-REPORT)",
        _ => "other",
    }
}

pub fn dimse_outcome(status: u16) -> &'static str {
    use crate::dicom::status::{self, StatusKind};
    match status::kind(status) {
        StatusKind::Success => "success",
        StatusKind::Warning => "warning",
        StatusKind::Cancel => "cancelled",
        StatusKind::Pending => "pending",
        StatusKind::Failure if status == status::general::NOT_AUTHORIZED => "refused",
        StatusKind::Failure => "failure",
    }
}

/// The Study Instance UID in a data set (a C-FIND/C-GET/C-MOVE identifier),
/// when it names one.
pub fn study_in(data_set: &[u8], transfer_syntax: &str) -> Option<String> {
    let mut scanner = crate::dicom::scan::DatasetScanner::new(transfer_syntax)?;
    scanner.feed(data_set);
    scanner
        .uids()
        .study_instance_uid
        .clone()
        .filter(|s| !s.is_empty())
}
