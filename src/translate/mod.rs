//! Pure, synchronous translation between the DIMSE and DICOMweb vocabularies.
pub mod stow;
