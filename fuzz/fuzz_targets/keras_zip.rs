//! The Keras loader on `.keras` (zip) archive bytes. Shares its entry point with `keras_h5`;
//! the two targets differ in their seed corpora, so each explores its own container format.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = kiln_bridges::keras::load_bytes(data.to_vec(), "fuzz.keras") {
        let _ = kiln_ir::verify(&g);
    }
});
