//! STOW-RS response (DICOM JSON) → per-instance outcome; DIMSE status mapping.
pub fn dimse_status_for_failure(reason: u16) -> u16 {
    let _ = reason;
    unimplemented!("helper")
}
pub fn failure_reason_meaning(reason: u16) -> &'static str {
    let _ = reason;
    unimplemented!("helper")
}
