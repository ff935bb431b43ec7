//! Pons: a DIMSE ⇄ DICOMweb gateway.
//!
//! ```text
//! direction A  modality --C-ECHO/C-STORE--> dimse::listener -> dimse_to_web -> spool -> web::client --STOW-RS--> origin
//! direction B  viewer --DICOMweb--> web::server -> web_to_dimse -> dimse::client --DIMSE--> PACS
//! ```
//!
//! Below both wires, `dicom` holds what is neither HTTP nor DIMSE (PS3.10
//! headers, the data-set scanner, UIDs, transfer syntaxes, the status
//! table); `translate` is pure and imports only dicom-rs and `dicom`.

pub mod app;
pub mod audit;
pub mod cache;
pub mod config;
pub mod dicom;
pub mod dimse;
pub mod dimse_to_web;
pub mod jobs;
pub mod metrics;
pub mod pixels;
pub mod spool;
pub mod test_hooks;
pub mod tls;
pub mod translate;
pub mod web;
pub mod web_to_dimse;
pub mod write_behind;
