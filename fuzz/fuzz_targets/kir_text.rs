//! The `.kir` text parser on arbitrary text (no `.bin`), then the verifier, as `kiln run`
//! would.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(g) = kiln_ir::text::parse(text, None) {
        let _ = kiln_ir::verify(&g);
    }
});
