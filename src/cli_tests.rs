//! End-to-end tests of the `kiln` binary: what a user types, what they see.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("running kiln")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const MODEL: &str = "examples/models/small_cnn/model.onnx";
const INPUT: &str = "examples/models/small_cnn/input_0.npy";
const OUTPUT: &str = "examples/models/small_cnn/output_0.npy";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A failure is one clear line naming the file, a non-zero exit, and never a panic.
fn assert_clean_error(o: &Output, file_hint: &str) {
    let t = text(o);
    assert!(!o.status.success(), "expected failure, got success: {t}");
    assert!(!t.contains("panicked") && !t.contains("RUST_BACKTRACE"), "panicked: {t}");
    assert!(t.contains("kiln: error:"), "no error line: {t}");
    assert!(t.contains(file_hint), "error does not name {file_hint}: {t}");
}

#[test]
fn run_matches_the_reference_output() {
    let o = kiln(&["run", MODEL, "--input", INPUT, "--expect", OUTPUT]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("matches"), "{t}");
}

#[test]
fn run_writes_outputs_as_npy() {
    let dir = tmp("out");
    let o = kiln(&["run", MODEL, "--input", INPUT, "--output-dir", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1);
    // what was written is what --expect accepts
    let written = files[0].as_ref().unwrap().path();
    let o = kiln(&["run", MODEL, "--input", INPUT, "--expect", written.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn info_lists_inputs_outputs_ops_and_parameters() {
    let o = kiln(&["info", MODEL]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("input_0: f32[1,32,32,3]"), "{t}");
    assert!(t.contains("parameters:"), "{t}");
    assert!(t.contains("conv"), "{t}");
}

#[test]
fn convert_then_run_is_bit_identical() {
    let dir = tmp("convert");
    let kir = dir.join("small_cnn.kir");
    let o = kiln(&["convert", MODEL, "-o", kir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let (a, b) = (dir.join("a"), dir.join("b"));
    assert!(kiln(&["run", MODEL, "--input", INPUT, "--output-dir", a.to_str().unwrap()]).status.success());
    let o = kiln(&["run", kir.to_str().unwrap(), "--input", INPUT, "--output-dir", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for f in std::fs::read_dir(&a).unwrap() {
        let f = f.unwrap().path();
        let g = b.join(f.file_name().unwrap());
        assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&g).unwrap(), "{} differs", f.display());
    }
}

#[test]
fn convert_fp16_halves_the_weights() {
    let dir = tmp("fp16");
    let (full, half) = (dir.join("full.kir"), dir.join("half.kir"));
    assert!(kiln(&["convert", MODEL, "-o", full.to_str().unwrap()]).status.success());
    let o = kiln(&["convert", MODEL, "-o", half.to_str().unwrap(), "--fp16"]);
    assert!(o.status.success(), "{}", text(&o));
    let size = |p: &Path| std::fs::metadata(format!("{}.bin", p.display())).unwrap().len() as f64;
    let ratio = size(&half) / size(&full);
    assert!(ratio < 0.56, "fp16 .bin is {ratio} of the f32 one");
    let o = kiln(&["run", half.to_str().unwrap(), "--input", INPUT]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn dump_prints_the_ir() {
    let o = kiln(&["dump", MODEL]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.starts_with("graph"), "{t}");
    assert!(t.contains("conv("), "{t}");
}

#[test]
fn bad_files_end_in_a_clear_error() {
    let dir = tmp("bad");
    let model = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(MODEL)).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.onnx", vec![]),
        ("truncated.onnx", model[..model.len() / 2].to_vec()),
        ("garbage.onnx", (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()),
        ("garbage.kir", b"graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %0 = nonsense(%x) : f32[2]\n}\n".to_vec()),
    ];
    for (name, bytes) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        for cmd in ["info", "dump"] {
            assert_clean_error(&kiln(&[cmd, p.to_str().unwrap()]), name);
        }
    }
    assert_clean_error(&kiln(&["info", "no/such/model.onnx"]), "model.onnx");
}

#[test]
fn bad_inputs_end_in_a_clear_error() {
    let dir = tmp("badin");
    let wrong = dir.join("wrong_shape.npy");
    // a valid .npy of the wrong shape
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut h = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }".to_string();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    npy.extend((h.len() as u16).to_le_bytes());
    npy.extend(h.as_bytes());
    npy.extend([0u8; 12]);
    std::fs::write(&wrong, &npy).unwrap();
    let o = kiln(&["run", MODEL, "--input", wrong.to_str().unwrap()]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("shape") && !t.contains("panicked"), "{t}");
    // a .npy whose header promises more data than the file holds
    let lying = dir.join("lying.npy");
    let mut npy2 = npy.clone();
    let s = String::from_utf8_lossy(&npy2[10..]).replace("(3,)", "(9,)");
    npy2.truncate(10);
    npy2.extend(s.as_bytes());
    std::fs::write(&lying, &npy2).unwrap();
    assert_clean_error(&kiln(&["run", MODEL, "--input", lying.to_str().unwrap()]), "lying.npy");
    assert_clean_error(&kiln(&["run", MODEL, "--input", INPUT, "--device", "NOPE"]), "NOPE");
}

/// The hand-made malformed models in tests/fixtures/bad (tools/make_bad_models.py): each
/// ends in one error line naming the file and what is wrong.
#[test]
fn malformed_onnx_files_end_in_a_clear_error() {
    let cases = [
        ("truncated.onnx", "truncated.onnx"),
        ("wrong_field_type.onnx", "no graph"),
        ("dangling_input.onnx", "node relu: input 0 `nowhere` is not defined"),
        ("cycle.onnx", "cycle"),
        ("self_loop.onnx", "node loop: the graph has a cycle"),
        ("huge_initializer.onnx", "1152921504606846976 elements"),
        ("negative_dim.onnx", "negative dimension"),
        ("external_escape.onnx", "must be a relative path inside the model's folder"),
        ("external_absolute.onnx", "must be a relative path inside the model's folder"),
        ("unknown_op.onnx", "node frob: op Frobnicate is not supported"),
        ("wrong_rank_input.onnx", "node mm:"),
    ];
    for (file, says) in cases {
        let path = format!("tests/fixtures/bad/{file}");
        for cmd in ["info", "dump", "run"] {
            let o = kiln(&[cmd, &path]);
            assert_clean_error(&o, file);
            assert!(text(&o).contains(says), "{cmd} {file}: expected `{says}` in: {}", text(&o));
        }
    }
}

#[test]
fn convert_fp16_reports_the_accuracy_change_on_given_inputs() {
    let dir = tmp("fp16-acc");
    let half = dir.join("half.kir");
    let o = kiln(&["convert", MODEL, "-o", half.to_str().unwrap(), "--fp16", "--input", INPUT]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let line = t.lines().find(|l| l.contains("max abs change")).unwrap_or_else(|| panic!("no accuracy line: {t}"));
    // small_cnn's outputs move by about 1e-3 with f16 weights: measured, not zero, not wild.
    let change: f64 = line.split("max abs change ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(change > 0.0 && change < 1e-2, "{line}");
}

#[test]
fn dump_runs_the_passes_of_a_level_and_lists_them() {
    let o = kiln(&["dump", MODEL, "-O", "2", "--passes"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("pipeline -O2"), "{t}");
    assert!(t.contains("kernels:"), "{t}");
    let o = kiln(&["dump", MODEL, "--after", "no-such-pass"]);
    assert_clean_error(&o, MODEL);
    assert!(text(&o).contains("no pass `no-such-pass`"), "{}", text(&o));
}

#[test]
fn bench_reports_latency_throughput_and_the_per_kernel_profile() {
    let o = kiln(&["bench", MODEL, "--niter", "3", "-pc"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for what in ["compile:", "first run:", "latency:      median", "throughput:", "per-kernel profile"] {
        assert!(t.contains(what), "no `{what}` in: {t}");
    }
    // every kernel of the compiled program shows up once in the profile
    let kernels: usize = t.lines().find_map(|l| l.strip_prefix("kernels:")).unwrap().trim().parse().unwrap();
    // CPU is the default device
    let rows = t.lines().filter(|l| l.contains("CPU ") && l.contains('%')).count();
    assert_eq!(rows, kernels, "{t}");
}

/// A TF2 SavedModel whose input `inp` is f32[N,4] (bridges/tests/fixtures/tf).
const SAVED_MODEL: &str = "bridges/tests/fixtures/tf/tiny_saved_model";

/// The fixture's raw little-endian f32 file `name` as an .npy of `shape` in `dir`.
fn fixture_npy(dir: &Path, name: &str, shape: Vec<usize>) -> PathBuf {
    let bytes = std::fs::read(format!("bridges/tests/fixtures/tf/{name}.f32")).unwrap();
    let vals: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let path = dir.join(format!("{name}.npy"));
    kiln::npy::write(&path, &kiln::ir::Tensor::new(shape, vals).unwrap()).unwrap();
    path
}

#[test]
fn input_shape_fixes_a_symbolic_batch_in_every_subcommand() {
    let before = text(&kiln(&["info", SAVED_MODEL]));
    assert!(before.contains("inp: f32[N,4]") && before.contains("out: f32[N,3]"), "{before}");
    let o = kiln(&["info", SAVED_MODEL, "--input-shape", "inp=2,4"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("inp: f32[2,4]") && t.contains("out: f32[2,3]"), "{t}");
    let d = text(&kiln(&["dump", SAVED_MODEL, "--input-shape", "inp=2,4"]));
    assert!(d.contains("-> (%out: f32[2,3])") && !d.contains("[N,"), "{d}");

    let dir = tmp("input-shape");
    let x = fixture_npy(&dir, "tiny_saved_model.x", vec![2, 4]);
    let y = fixture_npy(&dir, "tiny_saved_model.y", vec![2, 3]);
    let o = kiln(&["run", SAVED_MODEL, "--input-shape", "inp=2,4", "--input", x.to_str().unwrap(), "--expect", y.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("matches"), "{}", text(&o));
    // the fixed shape is checked at run time: a batch of 2 is now the only batch
    let x1 = dir.join("three.npy");
    kiln::npy::write(&x1, &kiln::ir::Tensor::new(vec![3, 4], vec![0f32; 12]).unwrap()).unwrap();
    let o = kiln(&["run", SAVED_MODEL, "--input-shape", "inp=2,4", "--input", x1.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("input `inp` must have shape [2,4]"), "{}", text(&o));

    let out = dir.join("fixed.kir");
    let o = kiln(&["convert", SAVED_MODEL, "--input-shape", "inp=2,4", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&kiln(&["info", out.to_str().unwrap()]));
    assert!(t.contains("inp: f32[2,4]") && t.contains("out: f32[2,3]"), "{t}");
}

#[test]
fn input_shapes_that_do_not_fit_end_in_a_clear_error() {
    let says = |args: &[&str], want: &str| {
        let o = kiln(args);
        let t = text(&o);
        assert!(!o.status.success() && t.contains("kiln: error:") && !t.contains("panicked"), "{t}");
        assert!(t.contains(want), "expected `{want}` in: {t}");
    };
    says(&["info", SAVED_MODEL, "--input-shape", "inp=2,5"], "input `inp` has shape [N,4]; the shape [2,5] does not fit it");
    says(&["info", SAVED_MODEL, "--input-shape", "inp=2"], "the shape [2] does not fit it");
    says(&["info", SAVED_MODEL, "--input-shape", "x=2,4"], "the model has no input `x`; its inputs are `inp`");
    says(&["dump", SAVED_MODEL, "--input-shape", "inp=2,four"], "`four` is not a dim size");
    says(&["info", SAVED_MODEL, "--input-shape", "2,4"], "no `=`");
    // small_cnn's input is f32[1,32,32,3] and its Flatten reshapes to a constant [1,2048]
    says(&["run", MODEL, "--input-shape", "input_0=1,32,32", "--input", INPUT], "input `input_0` has shape [1,32,32,3]");
    let o = kiln(&["run", MODEL, "--input-shape", "input_0=1,32,32,3", "--input", INPUT, "--expect", OUTPUT]);
    assert!(o.status.success() && text(&o).contains("matches"), "{}", text(&o));
}

#[test]
fn signature_chooses_a_saved_model_signature() {
    let o = kiln(&["info", SAVED_MODEL, "--signature", "serving_default"]);
    assert!(o.status.success() && text(&o).contains("out: f32[N,3]"), "{}", text(&o));
    let o = kiln(&["dump", SAVED_MODEL, "--signature", "nope"]);
    assert_clean_error(&o, "saved_model.pb");
    let t = text(&o);
    assert!(t.contains("no signature `nope`; the model has `serving_default`"), "{t}");
    assert!(!t.contains("__saved_model_init_op"), "{t}");
    let o = kiln(&["info", MODEL, "--signature", "serving_default"]);
    assert_clean_error(&o, "model.onnx");
    assert!(text(&o).contains("only a TensorFlow SavedModel has signatures"), "{}", text(&o));
}

/// The rows of `kiln info --device`'s kernel table: (device, kind).
fn kernel_rows(t: &str) -> Vec<(String, String)> {
    let table = t.split_once("kernels on ").map(|(_, rest)| rest).unwrap_or("");
    table
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.next()?.parse::<usize>().ok()?;
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

#[test]
fn info_with_a_device_lists_each_kernel_with_the_device_that_runs_it() {
    for (device, runs_all) in [("CPU", "CPU"), ("HETERO:REFERENCE,CPU", "REFERENCE"), ("hetero:cpu,reference", "CPU")] {
        let o = kiln(&["info", MODEL, "--device", device]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        let rows = kernel_rows(&t);
        let count: usize = t.lines().find_map(|l| l.strip_prefix("kernels on ")?.rsplit_once(": ")?.1.parse().ok()).unwrap();
        assert!(count > 0 && rows.len() == count, "{t}");
        assert!(rows.iter().all(|(d, _)| d == runs_all), "{t}");
        assert!(t.contains(&format!("kernels per device: {runs_all} {count}")), "{t}");
        assert!(t.contains("subgraphs: 1"), "{t}");
    }
    // The CPU says how each kernel runs: on its GEMM, or through the ir::eval fallback.
    let t = text(&kiln(&["info", MODEL, "--device", "CPU"]));
    assert!(kernel_rows(&t).iter().any(|(_, kind)| kind.starts_with("conv")), "{t}");
    assert!(t.contains("(gemm)"), "{t}");
}

#[test]
fn info_with_an_unknown_device_is_a_clean_error() {
    let o = kiln(&["info", MODEL, "--device", "HETERO:CPU,NOPE"]);
    assert_clean_error(&o, "NOPE");
    assert!(text(&o).contains("no such device"), "{}", text(&o));
}

#[test]
fn bench_per_kernel_profile_shows_the_device_of_each_kernel_under_hetero() {
    let o = kiln(&["bench", MODEL, "-d", "HETERO:REFERENCE,CPU", "--niter", "2", "-pc"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("device:       HETERO:REFERENCE,CPU"), "{t}");
    let rows: Vec<&str> = t.lines().skip_while(|l| !l.starts_with("per-kernel profile")).skip(2).collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.split_whitespace().nth(2) == Some("REFERENCE")), "{t}");
}
