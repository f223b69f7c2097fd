//! The `.kir` reader with its `.bin`: the input is the text, a NUL byte, then the weights
//! file (seeds are made that way by `fuzz/seed.sh`), so both halves and the `bin(offset,
//! nbytes)` references between them get mutated. No NUL: all of it is the `.bin` of a fixed
//! text whose constants all live in the `.bin`.
#![no_main]
use libfuzzer_sys::fuzz_target;

const FIXED: &str = include_str!("kir_bin_fixed.kir");

fuzz_target!(|data: &[u8]| {
    let (text, bin) = match data.iter().position(|&b| b == 0) {
        Some(i) => match std::str::from_utf8(&data[..i]) {
            Ok(t) => (t, &data[i + 1..]),
            Err(_) => return,
        },
        None => (FIXED, data),
    };
    if let Ok(g) = kiln_ir::text::parse(text, Some(bin)) {
        let _ = kiln_ir::verify(&g);
    }
});
