//! A Modality Worklist C-FIND identifier (any bytes that pass the length
//! check): the queries made of it for both resources, and the identifier
//! itself as the origin's answer, as a worklist entry and as a workitem.
#![no_main]
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use libfuzzer_sys::fuzz_target;
use pons::translate::mwl::WorklistQuery;
use pons::translate::ups::{mwl_to_ups, ups_to_mwl};

fuzz_target!(|data: &[u8]| {
    let ts = TransferSyntaxRegistry
        .get("1.2.840.10008.1.2.1")
        .expect("built in");
    let Ok(identifier) = pons::dicom::lengths::read_dataset(data, ts) else {
        return;
    };
    let workitem = mwl_to_ups(&identifier);
    let entry = ups_to_mwl(&identifier);
    if let Ok(query) = WorklistQuery::from_identifier(&identifier) {
        let _ = query.mwl_params();
        let _ = query.ups_params();
        let _ = query.responses(&identifier);
        let _ = query.responses(&entry);
        let _ = query.responses(&ups_to_mwl(&workitem));
    }
});
