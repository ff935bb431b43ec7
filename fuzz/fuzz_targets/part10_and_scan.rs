//! The head of a PS3.10 file (WADO-RS parts, STOW-RS parts, the cache) and
//! the streaming data-set scanner fed in pieces of every size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pons::dicom::part10::parse_part10_header;
use pons::dicom::scan::DatasetScanner;

fuzz_target!(|data: &[u8]| {
    let _ = parse_part10_header(data);
    let piece = 1 + data.first().copied().unwrap_or(0) as usize;
    for ts in [
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
    ] {
        let mut scanner = DatasetScanner::new(ts).unwrap();
        for chunk in data.chunks(piece) {
            scanner.feed(chunk);
        }
        let _ = scanner.finish();
    }
});
