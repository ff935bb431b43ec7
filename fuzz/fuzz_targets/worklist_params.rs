//! A worklist or workitem search query string (direction B), and attribute
//! matching with arbitrary keys and values (direction A checks every answer).
#![no_main]
use dicom_core::VR;
use libfuzzer_sys::fuzz_target;
use pons::translate::matching::{matches, split_range};
use pons::translate::qido_params::mwl_to_cfind;
use pons::translate::ups::ups_params_to_mwl;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let params: Vec<(String, String)> = text
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    let _ = mwl_to_cfind(&params);
    if let Ok(search) = ups_params_to_mwl(&params) {
        let _ = mwl_to_cfind(&search.mwl_params);
    }
    for (pattern, value) in &params {
        for vr in [VR::DA, VR::TM, VR::DT, VR::PN, VR::UI, VR::CS, VR::LO] {
            let _ = matches(vr, pattern, value);
            let _ = split_range(vr, pattern);
        }
    }
});
