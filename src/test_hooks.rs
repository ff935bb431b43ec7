//! Misbehaviour on purpose, for tests of what must survive it. Only builds
//! with the `test-hooks` feature (which only the tests enable) act on it;
//! in release builds these are empty.

/// A C-FIND identifier or QIDO-RS query holding this makes its handler panic.
pub const PANIC_WORD: &str = "PONS-TEST-PANIC";
/// A C-STORE of this SOP Instance UID makes the association's task panic.
pub const PANIC_UID: &str = "1.2.826.0.1.3680043.10.1.666";

pub fn panic_if_asked(bytes: &[u8]) {
    #[cfg(any(test, feature = "test-hooks"))]
    if bytes == PANIC_UID.as_bytes()
        || bytes
            .windows(PANIC_WORD.len())
            .any(|w| w == PANIC_WORD.as_bytes())
    {
        panic!("deliberate panic (test-hooks)");
    }
    let _ = bytes;
}
