//! A command set as it comes off a P-DATA-TF: Implicit VR LE, any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pons::dimse::message::Command::decode(data);
});
