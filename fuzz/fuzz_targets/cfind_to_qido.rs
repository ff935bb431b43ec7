//! A C-FIND identifier (any bytes that pass the length check) into the
//! QIDO-RS query that answers it, in both models.
#![no_main]
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use libfuzzer_sys::fuzz_target;
use pons::translate::query::{cfind_to_qido, Model};

fuzz_target!(|data: &[u8]| {
    let ts = TransferSyntaxRegistry
        .get("1.2.840.10008.1.2.1")
        .expect("built in");
    let Ok(identifier) = pons::dicom::lengths::read_dataset(data, ts) else {
        return;
    };
    for model in [Model::PatientRoot, Model::StudyRoot] {
        let _ = cfind_to_qido(&identifier, model, false);
        let _ = cfind_to_qido(&identifier, model, true);
    }
});
