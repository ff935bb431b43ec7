//! A QIDO-RS query string into a C-FIND identifier, at every level.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pons::translate::qido_params::qido_to_cfind;
use pons::translate::query::Level;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let params: Vec<(String, String)> = text
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    for level in [Level::Study, Level::Series, Level::Image] {
        let _ = qido_to_cfind(level, Some("1.2.3"), None, &params);
        let _ = qido_to_cfind(level, None, None, &params);
    }
});
