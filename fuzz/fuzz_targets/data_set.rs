//! Identifiers, N-ACTION / N-EVENT-REPORT information, C-FIND responses:
//! whole data sets from a peer, checked then decoded, in each syntax a
//! presentation context may name. No panic, no allocation from a length.
#![no_main]
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use libfuzzer_sys::fuzz_target;

const SYNTAXES: [&str; 4] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
];

fuzz_target!(|data: &[u8]| {
    for uid in SYNTAXES {
        let ts = TransferSyntaxRegistry.get(uid).expect("built in");
        let _ = pons::dicom::lengths::read_dataset(data, ts);
    }
});
