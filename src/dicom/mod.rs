//! DICOM bytes that are neither HTTP nor DIMSE: the PS3.10 header, the
//! streaming data-set scanner, UIDs and transfer-syntax lists. Both wires,
//! both directions, the spool, the cache and pixels use them.
pub mod lengths;
pub mod part10;
pub mod scan;
pub mod status;
pub mod syntaxes;
pub mod uid;
