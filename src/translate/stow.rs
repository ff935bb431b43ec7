//! STOW-RS response (DICOM JSON) → per-instance outcome; DIMSE status mapping.
