//! small_cnn, compiled ahead of time by build.rs (kiln-build), run from safe Rust on the
//! model's reference input and compared with its reference output (rtol 1e-4, atol 1e-5).

include!(concat!(env!("OUT_DIR"), "/small_cnn.rs"));

const INPUT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/small_cnn/input_0.npy"
);
const OUTPUT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/small_cnn/output_0.npy"
);

/// The f32 data of a little-endian, C-order .npy (enough for the shipped files).
fn read_npy_f32(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(bytes.starts_with(b"\x93NUMPY"), "{path} is not .npy");
    let (len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = String::from_utf8_lossy(&bytes[start..start + len]);
    assert!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{path}: {header}"
    );
    bytes[start + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn main() {
    let input = read_npy_f32(INPUT);
    let want = read_npy_f32(OUTPUT);
    println!(
        "small_cnn: input {} {:?} -> output {} {:?}",
        small_cnn::INPUT_NAMES[0],
        small_cnn::INPUT_SHAPES[0],
        small_cnn::OUTPUT_NAMES[0],
        small_cnn::OUTPUT_SHAPES[0]
    );
    let mut session = small_cnn::Session::new();
    let got = session.run(&input).expect("running small_cnn");
    println!("output: {got:?}");
    assert_eq!(got.len(), want.len());
    let mut max_abs = 0f32;
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        let d = (a - b).abs();
        assert!(d <= 1e-5 + 1e-4 * b.abs(), "element {i}: {a} vs {b}");
        max_abs = max_abs.max(d);
    }
    println!("matches the reference output (max abs diff {max_abs:.3e}, rtol 1e-4, atol 1e-5)");
    // A wrong input length is an error, not a crash.
    let err = small_cnn::run(&input[1..]).unwrap_err();
    println!("a short input is refused: {err}");
}
