//! The ahead-of-time artifact end to end: `kiln compile --aot` on the shipped small_cnn,
//! the C example (examples/aot-c/main.c) built with the system `cc` against it, run on the
//! model's reference input and compared with its reference output (rtol 1e-4, atol 1e-5,
//! inside main.c's --expect); the object's undefined symbols; external weights and their
//! hash check; an aarch64 object; a symbolic batch fixed by `--input-shape` (and the error
//! naming the input without it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/models/small_cnn/model.onnx");
const INPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/models/small_cnn/input_0.npy");
const OUTPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/models/small_cnn/output_0.npy");
const MAIN_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/aot-c/main.c");

/// What an artifact may leave undefined: libc and libm.
const LIBC_LIBM: &[&str] = &[
    "memcpy", "memmove", "memset", "memcmp", "expf", "exp", "logf", "log", "sqrtf", "sqrt", "fmaf", "fma", "floorf",
    "floor", "ceilf", "ceil", "truncf", "trunc", "nearbyintf", "nearbyint", "roundf", "round", "fminf", "fmaxf",
    "powf", "pow", "tanhf", "erff", "sinf", "cosf",
];

fn tmp(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-aot-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed:\n{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    o
}

fn kiln_compile(out: &Path, extra: &[&str]) -> String {
    let o = run(Command::new(env!("CARGO_BIN_EXE_kiln")).args(["compile", MODEL, "--aot", "-o"]).arg(out).args(extra));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn undefined_symbols(obj: &Path) -> Vec<String> {
    let o = run(Command::new("nm").arg("-u").arg(obj));
    String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.split_whitespace().last().map(String::from)).collect()
}

fn build_c(dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(format!("{name}_main"));
    run(Command::new("cc")
        .args(["-O2", "-Wall", "-Werror"])
        .arg(format!("-I{}", dir.display()))
        .arg(format!("-DKILN_MODEL={name}"))
        .arg(format!("-DKILN_HEADER=\"{name}.h\""))
        .arg(MAIN_C)
        .arg(dir.join(format!("{name}.o")))
        .args(["-lm", "-lpthread", "-o"])
        .arg(&exe));
    exe
}

#[test]
fn small_cnn_artifact_matches_the_reference_from_c() {
    let dir = tmp("c");
    let said = kiln_compile(&dir.join("small_cnn"), &[]);
    assert!(said.contains("small_cnn.o") && said.contains("small_cnn.h"), "{said}");
    for sym in undefined_symbols(&dir.join("small_cnn.o")) {
        assert!(LIBC_LIBM.contains(&sym.as_str()), "small_cnn.o needs `{sym}`, which is not libc or libm");
    }
    let exe = build_c(&dir, "small_cnn");
    for threads in ["1", "2", "3"] {
        let o = run(Command::new(&exe).args(["--threads", threads, "--expect", OUTPUT, "--out-dir"]).arg(&dir).arg(INPUT));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("matches"), "{out}");
    }
    // The written .npy is what the reference reader reads.
    let written = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).find(|e| e.path().extension().is_some_and(|x| x == "npy")).expect("an output .npy");
    let o = run(Command::new(&exe).args(["--expect"]).arg(written.path()).arg(INPUT));
    assert!(String::from_utf8_lossy(&o.stdout).contains("matches"));
}

#[test]
fn external_weights_are_mapped_and_checked() {
    let dir = tmp("weights");
    kiln_compile(&dir.join("cnn_ext"), &["--weights", "file"]);
    let bin = dir.join("cnn_ext.bin");
    let obj_size = std::fs::metadata(dir.join("cnn_ext.o")).unwrap().len();
    let bin_size = std::fs::metadata(&bin).unwrap().len();
    assert!(bin_size > obj_size / 2, "the weights went to the .bin ({bin_size} bytes; .o {obj_size})");
    let exe = build_c(&dir, "cnn_ext");
    let o = run(Command::new(&exe).arg("--weights").arg(&bin).args(["--expect", OUTPUT, INPUT]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("matches"));
    // Without the file, and with one flipped byte, create refuses with the reason.
    let o = Command::new(&exe).args(["--expect", OUTPUT, INPUT]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("cannot open"), "{o:?}");
    let mut bytes = std::fs::read(&bin).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let bad = dir.join("bad.bin");
    std::fs::write(&bad, &bytes).unwrap();
    let o = Command::new(&exe).arg("--weights").arg(&bad).arg(INPUT).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("hash"), "{o:?}");
}

#[test]
fn aarch64_objects_are_aarch64_elf() {
    let dir = tmp("aarch64");
    kiln_compile(&dir.join("cnn_arm"), &["--target", "aarch64-linux"]);
    let obj = dir.join("cnn_arm.o");
    for sym in undefined_symbols(&obj) {
        assert!(LIBC_LIBM.contains(&sym.as_str()), "cnn_arm.o needs `{sym}`");
    }
    match Command::new("file").arg(&obj).output() {
        Ok(o) => {
            let said = String::from_utf8_lossy(&o.stdout);
            assert!(said.contains("ELF 64-bit") && said.contains("aarch64"), "{said}");
        }
        Err(e) => println!("skipping the `file` check: cannot run `file` ({e}); install the Debian package `file`"),
    }
}

#[test]
fn compile_errors_name_what_is_wrong() {
    let dir = tmp("errors");
    let says = |args: &[&str], what: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(what), "{args:?}: {err}");
    };
    let out = dir.join("x");
    let out = out.to_str().unwrap();
    says(&["compile", MODEL, "-o", out], "add --aot");
    says(&["compile", MODEL, "--aot", "-o", out, "--target", "riscv"], "unknown target `riscv`");
    says(&["compile", MODEL, "--aot", "-o", out, "--weights", "disk"], "unknown --weights");
    let bad_name = dir.join("1st");
    says(&["compile", MODEL, "--aot", "-o", bad_name.to_str().unwrap()], "cannot name C symbols");
}

/// A 1×1 convolution and a relu over a symbolic batch `N`, in kiln's text form.
const SYMBOLIC: &str = r#"graph sym(%x: f32[N,3,4,4]) -> (%y: f32[N,2,4,4]) {
  @w = f32[2,3,1,1] [1.0,2.0,3.0,-1.0,0.5,0.0]
  input %x
  %0 = conv(%x, @w) {auto_pad=explicit, dilations=[], group=1, kernel_shape=[1,1], pads=[], strides=[1,1]} : f32[N,2,4,4]
  %1 = relu(%0) : f32[N,2,4,4]
  return %1
}
"#;

#[test]
fn symbolic_dims_are_fixed_by_input_shape_or_named() {
    let dir = tmp("symbolic");
    let model = dir.join("sym.kir");
    std::fs::write(&model, SYMBOLIC).unwrap();
    let out = dir.join("sym");
    let compile = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.arg("compile").arg(&model).args(["--aot", "-o"]).arg(&out);
        c
    };

    let o = compile().output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("input `x` has shape [N,3,4,4]") && err.contains("--input-shape x="), "{err}");

    run(compile().args(["--input-shape", "x=2,3,4,4"]));
    let header = std::fs::read_to_string(dir.join("sym.h")).unwrap();
    assert!(header.contains("sym_input_shapes[1][4] = {{2, 3, 4, 4}}"), "{header}");
    assert!(header.contains("sym_output_shapes[1][4] = {{2, 2, 4, 4}}"), "{header}");

    // Batch 2 as raw bytes; the output read back from the .npy the runner writes.
    let x: Vec<f32> = (0..2 * 3 * 16).map(|i| (i as f32 * 0.37).sin()).collect();
    let input = dir.join("x.raw");
    std::fs::write(&input, x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let exe = build_c(&dir, "sym");
    run(Command::new(&exe).args(["--threads", "2", "--out-dir"]).arg(&dir).arg(&input));
    let npy = std::fs::read(dir.join("y.npy")).unwrap();
    let got: Vec<f32> = npy[npy.len() - 2 * 2 * 16 * 4..].chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let w = [[1.0f32, 2.0, 3.0], [-1.0, 0.5, 0.0]];
    for n in 0..2 {
        for (o, wo) in w.iter().enumerate() {
            for p in 0..16 {
                let want = (0..3).map(|c| wo[c] * x[(n * 3 + c) * 16 + p]).sum::<f32>().max(0.0);
                let at = (n * 2 + o) * 16 + p;
                assert!((got[at] - want).abs() <= 1e-5 + 1e-4 * want.abs(), "y[{n},{o},{p}] = {} want {want}", got[at]);
            }
        }
    }
}
