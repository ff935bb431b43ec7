//! Accept headers (several, one per line) through the one Accept parser,
//! with the offers and matchers the routes use; the same text as a
//! Content-Type through `related_params` / `related_boundary`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pons::web::multipart::{related_boundary, related_params};
use pons::web_to_dimse::accept::{media_covers, Accept, MediaRange, DICOM_JSON};

const DICOM: &str = "application/dicom";
const SYNTAXES: [&str; 3] = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "*"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = related_params(&text);
    let _ = related_boundary(&text);

    let accept = Accept::parse(text.split('\n'));
    let _ = accept.is_empty();
    let touch = |r: &MediaRange| {
        let _ = r.params().count();
        let _ = (r.param("type"), r.param("transfer-syntax"), r.param(""));
        let _ = media_covers(r.media, r.part_type(DICOM));
        r.covers(DICOM_JSON) || r.media.eq_ignore_ascii_case("application/json")
    };
    // QIDO-RS / metadata
    let _ = accept.choose(&[()], |r, _| touch(r));
    // rendered
    let _ = accept.choose(&["image/jpeg", "image/png", "image/gif"], |r, m| {
        r.covers(m)
    });
    // WADO-RS instances, frames, bulk data
    let _ = accept.choose(&SYNTAXES, |r, ts| {
        r.takes_part(DICOM, DICOM) && r.param("transfer-syntax").unwrap_or(SYNTAXES[0]) == *ts
    });
    let _ = accept.choose(
        &["application/octet-stream", "image/jpeg", "*/*"],
        |r, m| r.takes_part(m, "application/octet-stream"),
    );
    let _ = accept.refuse("nothing");
});
