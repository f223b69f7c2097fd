//! The ONNX backend node conformance suite, run on any kiln device.
//!
//! Each case is a folder `<root>/node/<case>/` with `model.onnx` and
//! `test_data_set_N/{input,output}_K.pb`. Outputs are compared as the ONNX runner does:
//! same dtype and shape; floats within rtol 1e-3, atol 1e-7 (NaN equals NaN); everything
//! else exactly. A checked-in expected-failures file keeps the result honest both ways: a
//! failure not listed fails the run, and so does a listed case that now passes.

use kiln_ir::{DType, Tensor};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

pub const RTOL: f64 = 1e-3;
pub const ATOL: f64 = 1e-7;

/// How closely an optimized run must follow the unoptimized one (issue 4's bar).
pub const LEVELS_RTOL: f64 = 1e-4;
pub const LEVELS_ATOL: f64 = 1e-5;

/// Where to run: a device, and the optimization level of the passes before it. Above -O0,
/// each case also runs at -O0: where that run passes, the optimized outputs must equal it
/// within [`LEVELS_RTOL`] and [`LEVELS_ATOL`].
#[derive(Clone, Debug)]
pub struct Target {
    pub device: String,
    pub level: kiln_runtime::Level,
}

impl Target {
    pub fn new(device: &str, level: kiln_runtime::Level) -> Target {
        Target { device: device.to_string(), level }
    }

    /// The device from `$KILN_CONFORMANCE_DEVICE` (REFERENCE) and the level from `$KILN_OPT`
    /// (2), as the test harnesses take them.
    pub fn from_env() -> Result<Target, String> {
        let device = std::env::var("KILN_CONFORMANCE_DEVICE").unwrap_or_else(|_| "REFERENCE".into());
        let level = std::env::var("KILN_OPT").unwrap_or_else(|_| "2".into()).parse()?;
        Ok(Target { device, level })
    }

    pub fn compile(&self, model: &kiln_runtime::Model) -> Result<kiln_runtime::CompiledModel, String> {
        self.compile_at(model, self.level)
    }

    pub fn compile_at(&self, model: &kiln_runtime::Model, level: kiln_runtime::Level) -> Result<kiln_runtime::CompiledModel, String> {
        let options = kiln_runtime::CompileOptions { level, ..Default::default() };
        kiln_runtime::compile_with(model, &self.device, &options).map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.device, self.level)
    }
}

/// Where the cases are: `$KILN_ONNX_NODE_TESTS`, else `../shared/onnx-node-tests` beside
/// the repository, else `target/onnx-node-tests` (what `tools/gen-onnx-node-tests.sh` writes).
pub fn data_root() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("KILN_ONNX_NODE_TESTS") {
        return Ok(PathBuf::from(p));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for cand in [repo.join("../shared/onnx-node-tests"), repo.join("target/onnx-node-tests")] {
        if cand.join("node").is_dir() {
            return Ok(cand);
        }
    }
    Err("no ONNX node test cases found: set KILN_ONNX_NODE_TESTS, or run tools/gen-onnx-node-tests.sh \
         (writes target/onnx-node-tests)"
        .into())
}

/// The expected-failures file of a suite on a device.
pub fn expected_failures_path(suite: &str, device: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("expected-failures").join(format!("onnx-{suite}-{}.txt", device.to_ascii_lowercase()))
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Inputs or outputs that are not plain tensors (sequences, optionals, maps): not counted.
    NotPlain,
}

/// Runs one case on `target`.
pub fn run_case(dir: &Path, target: &Target) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| run_case_inner(dir, target))) {
        Ok(Ok(())) => Outcome::Pass,
        Ok(Err(e)) if e == NOT_PLAIN => Outcome::NotPlain,
        // The case's own folder is in many messages; the name says it already.
        Ok(Err(e)) => Outcome::Fail(e.replace(&format!("{}/", dir.display()), "")),
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Outcome::Fail(format!("PANIC: {}", msg.unwrap_or_default()))
        }
    }
}

const NOT_PLAIN: &str = "not plain tensors";

fn is_plain(model_path: &Path) -> Result<bool, String> {
    use protobuf::Message;
    let bytes = std::fs::read(model_path).map_err(|e| e.to_string())?;
    let m = onnx_protobuf::ModelProto::parse_from_bytes(&bytes).map_err(|e| e.to_string())?;
    let g = m.graph.as_ref().ok_or("no graph")?;
    Ok(g.input.iter().chain(g.output.iter()).all(|vi| vi.type_.as_ref().map_or(false, |t| t.has_tensor_type())))
}

fn run_case_inner(dir: &Path, target: &Target) -> Result<(), String> {
    let model_path = dir.join("model.onnx");
    if !is_plain(&model_path)? {
        return Err(NOT_PLAIN.into());
    }
    let model = kiln_runtime::load(&model_path).map_err(|e| format!("load: {e}"))?;
    let compiled = target.compile(&model).map_err(|e| format!("compile: {e}"))?;
    let unoptimized = if target.level > kiln_runtime::Level::O0 {
        Some(target.compile_at(&model, kiln_runtime::Level::O0).map_err(|e| format!("compile at -O0: {e}"))?)
    } else {
        None
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).map_or(false, |n| n.starts_with("test_data_set_")))
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err("no test data sets".into());
    }
    for set in sets {
        let inputs = read_numbered(&set, "input")?;
        let expected = read_numbered(&set, "output")?;
        let mut request = compiled.request();
        let outputs = request.infer_ordered(&inputs).map_err(|e| format!("run: {e}"))?;
        if outputs.len() != expected.len() {
            return Err(format!("{} outputs, expected {}", outputs.len(), expected.len()));
        }
        let baseline = match &unoptimized {
            Some(c) => Some(c.request().infer_ordered(&inputs).map_err(|e| format!("run at -O0: {e}"))?),
            None => None,
        };
        for (k, ((name, got), want)) in outputs.iter().zip(&expected).enumerate() {
            let base = baseline.as_ref().and_then(|b| b.get(k)).map(|(_, t)| t);
            // Only an -O0 run that is right sets the bar for the optimized one.
            if let Some(base) = base.filter(|b| compare(b, want).is_ok()) {
                compare_with(got, base, LEVELS_RTOL, LEVELS_ATOL).map_err(|e| format!("output {k} ({name}) differs from -O0: {e}"))?;
            }
            compare(got, want).map_err(|e| format!("output {k} ({name}): {e}"))?;
        }
    }
    Ok(())
}

fn read_numbered(dir: &Path, prefix: &str) -> Result<Vec<Tensor>, String> {
    let mut out = Vec::new();
    for k in 0.. {
        let p = dir.join(format!("{prefix}_{k}.pb"));
        if !p.exists() {
            break;
        }
        let (_, t) = kiln_bridges::onnx::read_tensor(&p).map_err(|e| format!("reading {prefix}_{k}.pb: {e}"))?;
        out.push(t);
    }
    Ok(out)
}

/// Compares as the ONNX backend runner does.
pub fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    compare_with(got, want, RTOL, ATOL)
}

/// Same dtype and shape; floats within `rtol` and `atol` (NaN equals NaN, infinities
/// exactly); everything else exactly.
pub fn compare_with(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {} but expected {}", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} but expected {:?}", got.shape(), want.shape()));
    }
    if got.dtype().is_float() {
        let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let ok = if a.is_nan() || b.is_nan() {
                a.is_nan() && b.is_nan()
            } else if a.is_infinite() || b.is_infinite() {
                a == b
            } else {
                (a - b).abs() <= atol + rtol * b.abs()
            };
            if !ok {
                return Err(format!("element {i}: {a} but expected {b}"));
            }
        }
        Ok(())
    } else if got.data() == want.data() {
        Ok(())
    } else {
        let (g, w) = (got.to_i64_vec(), want.to_i64_vec());
        let i = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(0);
        let show = |t: &Tensor, v: &[i64]| if t.dtype() == DType::U64 { format!("{}", v[i] as u64) } else { format!("{}", v[i]) };
        Err(format!("element {i}: {} but expected {}", show(got, &g), show(want, &w)))
    }
}

/// All case folders under `root/suite` whose name contains `filter`, sorted. The ONNX
/// package's suites are `node`, `simple`, `pytorch-converted` and `pytorch-operator`.
pub fn cases(root: &Path, suite: &str, filter: Option<&str>) -> Result<Vec<PathBuf>, String> {
    let node = root.join(suite);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&node)
        .map_err(|e| format!("{}: {e}", node.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .filter(|p| filter.map_or(true, |f| p.file_name().and_then(|n| n.to_str()).map_or(false, |n| n.contains(f))))
        .collect();
    v.sort();
    Ok(v)
}

/// Case name → reason, from an expected-failures file (`name  # reason` per line).
pub fn read_expected(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('#') {
            Some((n, r)) => (n.trim().to_string(), r.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

pub fn write_expected(path: &Path, suite: &str, device: &str, failures: &BTreeMap<String, String>) -> std::io::Result<()> {
    let mut s = format!(
        "# ONNX {suite} conformance cases that fail on {device}, one per line with the reason.\n\
         # The conformance run fails on a failure missing here and on a case listed here that passes.\n\
         # Regenerate with: cargo run --release -p kiln-tests --bin conformance -- --suite {suite} --device {device} --update\n"
    );
    for (name, why) in failures {
        let why: String = why.chars().take(160).map(|c| if c == '\n' { ' ' } else { c }).collect();
        s += &format!("{name}  # {why}\n");
    }
    std::fs::write(path, s)
}

pub struct Summary {
    pub passed: Vec<String>,
    pub failed: BTreeMap<String, String>,
    pub not_plain: usize,
}

pub fn run_all(cases: &[PathBuf], target: &Target, verbose: bool) -> Summary {
    let mut s = Summary { passed: vec![], failed: BTreeMap::new(), not_plain: 0 };
    // Cases that panic would print a backtrace for each; the outcome records the message.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for dir in cases {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        match run_case(dir, target) {
            Outcome::Pass => {
                if verbose {
                    println!("pass {name}");
                }
                s.passed.push(name)
            }
            Outcome::Fail(why) => {
                if verbose {
                    println!("FAIL {name}: {why}");
                }
                s.failed.insert(name, why);
            }
            Outcome::NotPlain => s.not_plain += 1,
        }
    }
    std::panic::set_hook(hook);
    s
}

/// Compares a run with the expected-failures list; returns the problems (empty = green).
pub fn check_against_expected(s: &Summary, expected: &BTreeMap<String, String>, ran_all: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, why) in &s.failed {
        if !expected.contains_key(name) {
            problems.push(format!("unexpected failure: {name}: {why}"));
        }
        if why.starts_with("PANIC") {
            problems.push(format!("panic (a bug even when listed): {name}: {why}"));
        }
    }
    for name in &s.passed {
        if expected.contains_key(name) {
            problems.push(format!("listed as failing but passes now (remove it from the list): {name}"));
        }
    }
    if ran_all {
        let known: std::collections::BTreeSet<&String> = s.passed.iter().chain(s.failed.keys()).collect();
        for name in expected.keys() {
            if !known.contains(name) {
                problems.push(format!("listed but not a plain-tensor case in the suite: {name}"));
            }
        }
    }
    problems
}
