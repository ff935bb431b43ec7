//! Pure, synchronous translation between the DIMSE and DICOMweb vocabularies.
pub mod json;
pub mod query;
pub mod stow;
