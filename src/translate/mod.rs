//! Pure, synchronous translation between the DIMSE and DICOMweb vocabularies.
pub mod commitment;
pub mod json;
pub mod matching;
pub mod mwl;
pub mod qido_params;
pub mod query;
pub mod stow;
pub mod ups;
