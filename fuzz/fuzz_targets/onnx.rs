//! The ONNX loader on arbitrary bytes: any `Result` is fine; a panic, hang or huge
//! allocation is a bug. External data is refused (`base_dir` None), as for bytes off the wire.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = kiln_bridges::onnx::load_bytes(data, None, "fuzz.onnx") {
        let _ = kiln_ir::verify(&g);
    }
});
