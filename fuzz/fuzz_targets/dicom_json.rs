//! DICOM JSON bodies: STOW-RS responses from an origin, storage commitment
//! requests and results, and the reader under both.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pons::translate::stow::parse_stow_response(data, &["1.2.3", "1.2.4"]);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    use pons::translate::commitment::json::{request_from_json, result_from_json};
    let _ = request_from_json(&value, "1.2.3");
    let _ = result_from_json(&value, "1.2.3");
    let _ = pons::translate::json::from_json(value);
});
