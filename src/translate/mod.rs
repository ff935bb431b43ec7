//! Pure, synchronous translation between the DIMSE and DICOMweb vocabularies.
pub mod query;
pub mod stow;
