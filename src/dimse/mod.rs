//! DICOM Upper Layer and DIMSE messages. Knows nothing of HTTP.
