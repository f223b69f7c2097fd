//! The Keras loader on legacy `.h5` bytes (HDF5 through hdf5-pure). Shares its entry point
//! with `keras_zip`; the seed corpora differ.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = kiln_bridges::keras::load_bytes(data.to_vec(), "fuzz.h5") {
        let _ = kiln_ir::verify(&g);
    }
});
