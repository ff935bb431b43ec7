//! One part of a STOW-RS request: read its PS3.10 header, look ahead for
//! its UIDs, refuse it or stream it to the PACS, checked on the way.

use super::scu::Context;
use super::{body_error, Stow, DICOM};
use crate::dicom::part10::{parse_part10_header, FileMetaInfo, Part10Head};
use crate::dicom::scan::{DatasetScanner, ScanResult};
use crate::dicom::status::{self, StatusKind};
use crate::translate::stow::{
    failure_for_dimse_status, InstanceOutcome, InstanceReport, FAILURE_STUDY_MISMATCH,
};
use crate::web_to_dimse::WebError;
use bytes::{Bytes, BytesMut};

/// A preamble and file meta group are a few hundred bytes; more is not one.
const MAX_PART10_HEAD: usize = 64 * 1024;
/// Data set bytes held back, at most, while looking for the Study and
/// Series Instance UIDs (group 0020 comes early; pixel data comes last).
const LOOKAHEAD: usize = 1024 * 1024;
/// Deflated Explicit VR Little Endian.
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// Why a part is refused before or while it is sent: Failure Reason and a
/// sentence for the log.
type Refusal = (u16, String);

impl Stow<'_> {
    fn stored_any(&self) -> bool {
        self.reports.iter().any(|r| {
            matches!(
                r.outcome,
                InstanceOutcome::Stored | InstanceOutcome::StoredWithWarning(_)
            )
        })
    }

    fn refuse(&self, mut report: InstanceReport, (reason, why): Refusal) -> InstanceReport {
        tracing::debug!(
            pacs = %self.svc.name,
            sop_instance = report.sop_instance_uid.as_deref().unwrap_or("-"),
            reason = format_args!("{reason:04X}"),
            "part not stored: {why}"
        );
        report.outcome = InstanceOutcome::Failed(reason);
        report
    }

    /// Store one part; its report. Errors end the whole request (a broken
    /// body, or a PACS that cannot be reached before anything was stored).
    pub(super) async fn part(
        &mut self,
        field: &mut multer::Field<'static>,
    ) -> Result<InstanceReport, WebError> {
        let unnamed = InstanceReport {
            sop_class_uid: None,
            sop_instance_uid: None,
            retrieve_url: None,
            outcome: InstanceOutcome::Failed(status::storage::CANNOT_UNDERSTAND),
        };
        if let Some(ct) = field.content_type().map(|m| m.essence_str().to_owned()) {
            if ct != DICOM {
                let why = format!("the part is {ct}, not {DICOM}");
                return Ok(self.refuse(unnamed, (status::storage::CANNOT_UNDERSTAND, why)));
            }
        }
        let (meta, pending) = match read_head(field).await? {
            Ok(head) => head,
            Err(why) => return Ok(self.refuse(unnamed, (status::storage::CANNOT_UNDERSTAND, why))),
        };
        let report = InstanceReport {
            sop_class_uid: Some(meta.sop_class_uid.clone()),
            sop_instance_uid: Some(meta.sop_instance_uid.clone()),
            ..unnamed
        };
        let Some(mut scanner) = DatasetScanner::new(&meta.transfer_syntax_uid) else {
            let why = format!("unknown transfer syntax {}", meta.transfer_syntax_uid);
            return Ok(self.refuse(
                report,
                (status::storage::TRANSFER_SYNTAX_NOT_SUPPORTED, why),
            ));
        };

        // Look ahead for the UIDs, so that a refused part is never sent.
        let mut pending = BytesMut::from(&pending[..]);
        scanner.feed(&pending);
        let mut ended = false;
        while !scanner.uids_known() && scanner.error().is_none() && pending.len() < LOOKAHEAD {
            let Some(b) = field.chunk().await.map_err(body_error)? else {
                ended = true;
                break;
            };
            scanner.feed(&b);
            pending.extend_from_slice(&b);
        }
        let mut check = Checked {
            field,
            pending: Some(pending.freeze()),
            scanner: None,
            ended,
            meta: &meta,
            url_study: self.url_study,
            scan: None,
            refusal: None,
            body_error: None,
            sent: 0,
        };
        if ended {
            check.verdict(scanner);
        } else if let Some(e) = scanner.error() {
            check.refusal = Some((
                status::storage::CANNOT_UNDERSTAND,
                format!("not a valid data set: {e}"),
            ));
        } else {
            if scanner.uids_known() {
                check.refusal = check_uids(&meta, scanner.uids(), self.url_study).err();
            }
            check.scanner = Some(scanner);
        }
        if let Some(refusal) = check.refusal.take() {
            return Ok(self.refuse(report, refusal));
        }

        if let Some(e) = &self.pacs_error {
            let why = format!("PACS {} is unavailable: {e}", self.svc.name);
            return Ok(self.refuse(report, (status::general::PROCESSING_FAILURE, why)));
        }
        let (class, ts) = (&meta.sop_class_uid, &meta.transfer_syntax_uid);
        let pc = match self.scu.context(class, ts).await {
            Ok(Context::Ready(pc)) => pc,
            Ok(Context::ClassRefused) => {
                let why = format!("PACS {} takes no SOP class {class}", self.svc.name);
                return Ok(self.refuse(report, (status::general::SOP_CLASS_NOT_SUPPORTED, why)));
            }
            Ok(Context::SyntaxRefused) => {
                let why = format!("PACS {} takes no {class} in {ts}", self.svc.name);
                return Ok(self.refuse(
                    report,
                    (status::storage::TRANSFER_SYNTAX_NOT_SUPPORTED, why),
                ));
            }
            Err(e) if !self.stored_any() => return Err(WebError::from_dimse(&self.svc.name, e)),
            Err(e) => {
                tracing::warn!(pacs = %self.svc.name, error = %e, "PACS lost in mid-request");
                self.pacs_error = Some(e.to_string());
                let why = format!("PACS {} is unavailable: {e}", self.svc.name);
                return Ok(self.refuse(report, (status::general::PROCESSING_FAILURE, why)));
            }
        };

        let data_set = tokio_util::io::StreamReader::new(Box::pin(futures::stream::unfold(
            &mut check,
            |c| async move { c.next().await.map(|item| (item, c)) },
        )));
        let sent = self
            .scu
            .store(pc, &meta.sop_class_uid, &meta.sop_instance_uid, data_set)
            .await;
        if let Some(e) = check.body_error.take() {
            return Err(body_error(e));
        }
        if let Some(refusal) = check.refusal.take() {
            return Ok(self.refuse(report, refusal));
        }
        let status = match sent {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(pacs = %self.svc.name, error = %e, "C-STORE failed");
                let why = format!("C-STORE failed: {e}");
                return Ok(self.refuse(report, (status::general::PROCESSING_FAILURE, why)));
            }
        };
        let outcome = match status::kind(status) {
            StatusKind::Success => InstanceOutcome::Stored,
            StatusKind::Warning => InstanceOutcome::StoredWithWarning(status::as_warning(status)),
            _ => {
                let why = format!("the PACS answered status {status:04X}");
                return Ok(self.refuse(report, (failure_for_dimse_status(status), why)));
            }
        };
        let uids = check.scan.unwrap_or_default();
        let retrieve_url = match (&uids.study_instance_uid, &uids.series_instance_uid) {
            (Some(study), Some(series)) => Some(format!(
                "{}/studies/{study}/series/{series}/instances/{}",
                self.root, meta.sop_instance_uid
            )),
            _ => None,
        };
        self.studies.extend(uids.study_instance_uid);
        Ok(InstanceReport {
            retrieve_url,
            outcome,
            ..report
        })
    }
}

/// The part's PS3.10 header: its UIDs and the data set bytes read with it;
/// the inner Err says why the part is not a PS3.10 file.
async fn read_head(
    field: &mut multer::Field<'static>,
) -> Result<Result<(FileMetaInfo, Bytes), String>, WebError> {
    let mut head = BytesMut::new();
    loop {
        match parse_part10_header(&head) {
            Part10Head::Complete(at, meta) => return Ok(Ok((meta, head.split_off(at).freeze()))),
            Part10Head::Invalid(why) => return Ok(Err(format!("not a PS3.10 file: {why}"))),
            Part10Head::NeedMore if head.len() > MAX_PART10_HEAD => {
                return Ok(Err(format!(
                    "no end of the PS3.10 header within {MAX_PART10_HEAD} bytes"
                )))
            }
            Part10Head::NeedMore => {}
        }
        match field.chunk().await.map_err(body_error)? {
            Some(b) => head.extend_from_slice(&b),
            None => return Ok(Err("the part ends within its PS3.10 header".into())),
        }
    }
}

/// The UIDs a data set must have to be stored under this request.
fn check_uids(
    meta: &FileMetaInfo,
    uids: &ScanResult,
    url_study: Option<&str>,
) -> Result<(), Refusal> {
    for (what, in_meta, in_data_set) in [
        ("SOP Class", &meta.sop_class_uid, &uids.sop_class_uid),
        (
            "SOP Instance",
            &meta.sop_instance_uid,
            &uids.sop_instance_uid,
        ),
    ] {
        if in_data_set.as_ref().is_some_and(|d| d != in_meta) {
            return Err((
                status::storage::CANNOT_UNDERSTAND,
                format!("the file meta group and the data set name different {what} UIDs"),
            ));
        }
    }
    if let Some(url_study) = url_study {
        match &uids.study_instance_uid {
            Some(s) if s == url_study => {}
            Some(s) => {
                return Err((
                    FAILURE_STUDY_MISMATCH,
                    format!("Study Instance UID {s} is not the study {url_study} of the URL"),
                ))
            }
            None => {
                return Err((
                    FAILURE_STUDY_MISMATCH,
                    "the data set has no Study Instance UID".into(),
                ))
            }
        }
    }
    Ok(())
}

/// The data set of one part on its way to the PACS: held-back bytes first,
/// then the rest of the part, checked as it passes. A verdict against the
/// data set comes out as a read error instead of the end, so the C-STORE's
/// last fragment is never sent.
struct Checked<'f> {
    field: &'f mut multer::Field<'static>,
    pending: Option<Bytes>,
    /// None once the verdict is in.
    scanner: Option<DatasetScanner>,
    ended: bool,
    meta: &'f FileMetaInfo,
    url_study: Option<&'f str>,
    /// The UIDs of a data set that passed.
    scan: Option<ScanResult>,
    refusal: Option<Refusal>,
    body_error: Option<multer::Error>,
    /// Bytes handed out so far.
    sent: u64,
}

impl Checked<'_> {
    fn verdict(&mut self, scanner: DatasetScanner) {
        self.ended = true;
        match scanner.finish() {
            Ok(uids) => match check_uids(self.meta, &uids, self.url_study) {
                Ok(()) => self.scan = Some(uids),
                Err(refusal) => self.refusal = Some(refusal),
            },
            Err(e) => {
                self.refusal = Some((
                    status::storage::CANNOT_UNDERSTAND,
                    format!("not a valid data set: {e}"),
                ))
            }
        }
    }

    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        let item = self.next_unpadded().await;
        if let Some(Ok(b)) = &item {
            self.sent += b.len() as u64;
        }
        item
    }

    async fn next_unpadded(&mut self) -> Option<std::io::Result<Bytes>> {
        if let Some(b) = self.pending.take().filter(|b| !b.is_empty()) {
            return Some(Ok(b));
        }
        if self.ended {
            return self.at_end();
        }
        match self.field.chunk().await {
            Ok(Some(b)) => {
                if let Some(s) = self.scanner.as_mut() {
                    s.feed(&b);
                }
                Some(Ok(b))
            }
            Ok(None) => {
                if let Some(scanner) = self.scanner.take() {
                    self.verdict(scanner);
                }
                self.ended = true;
                self.at_end()
            }
            Err(e) => {
                self.ended = true;
                self.body_error = Some(e);
                Some(Err(std::io::Error::other("the request body broke off")))
            }
        }
    }

    /// After the last byte of the part: the verdict as a read error, or
    /// the padding an odd-length deflated data set needs.
    fn at_end(&mut self) -> Option<std::io::Result<Bytes>> {
        if self.refusal.is_none() && self.sent % 2 == 1 {
            // A deflate stream may end on an odd byte; PS3.5 A.5 pads it
            // with one NUL. Anything else of odd length is broken, and
            // DCMTK-based PACS stall on an odd fragment.
            if self.meta.transfer_syntax_uid == DEFLATED {
                return Some(Ok(Bytes::from_static(&[0])));
            }
            self.refusal = Some((
                status::storage::CANNOT_UNDERSTAND,
                "the data set has an odd length".into(),
            ));
        }
        self.refusal.is_some().then(refused)
    }
}

fn refused() -> std::io::Result<Bytes> {
    Err(std::io::Error::other("the data set was refused at its end"))
}
