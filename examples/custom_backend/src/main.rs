//! Registers TOY beside kiln's own devices, compiles a model as `HETERO:TOY,CPU`, runs the
//! reference input found beside the model and compares with the reference output (rtol
//! 1e-4, atol 1e-5), then says how many kernels each device ran.
//!
//! usage: custom-backend [-O N] [--device D] DIR/model.onnx
//! (DIR holds input_K.npy and output_K.npy, as the model zoo and examples/models do)
//!
//! The default level is -O1: at -O2 fusion folds every elementwise op of a CNN into its
//! convolution's kernel, which leaves TOY nothing to run.

use custom_backend::Toy;
use kiln_runtime::ir::Tensor;
use kiln_runtime::{CompileOptions, Level};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("custom-backend: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<bool, String> {
    let (mut level, mut device, mut model) = (Level::O1, "HETERO:TOY,CPU".to_string(), None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-O" => level = args.next().ok_or("-O takes 0, 1 or 2")?.parse()?,
            "--device" | "-d" => device = args.next().ok_or("--device takes a device string")?,
            _ => model = Some(PathBuf::from(a)),
        }
    }
    let model = model.ok_or("usage: custom-backend [-O N] [--device D] DIR/model.onnx")?;
    let dir = model.parent().unwrap_or(Path::new("."));

    // The one step a new device needs: register it. Every device string can then name it.
    let mut registry = kiln_runtime::registry();
    registry.register(Arc::new(Toy));

    let m = kiln_runtime::load(&model).map_err(|e| e.to_string())?;
    let options = CompileOptions { level, ..Default::default() };
    let compiled = kiln_runtime::compile_in(&registry, &m, &device, &options).map_err(|e| e.to_string())?;
    let inputs = numbered(dir, "input", m.inputs().len())?;
    let want = numbered(dir, "output", m.outputs().len())?;

    let mut request = compiled.request();
    request.set_profiling(true);
    let got = request.infer_ordered(&inputs).map_err(|e| e.to_string())?;
    let mut all_match = true;
    for ((name, g), w) in got.iter().zip(&want) {
        match compare(g, w) {
            Ok(d) => println!("{name}: matches the reference (max abs diff {d:.2e}, rtol 1e-4, atol 1e-5)"),
            Err(why) => {
                println!("{name}: DIFFERS from the reference: {why}");
                all_match = false;
            }
        }
    }
    let mut ran: Vec<(String, usize)> = Vec::new();
    for t in request.profile() {
        match ran.iter_mut().find(|(d, _)| *d == t.device) {
            Some((_, n)) => *n += 1,
            None => ran.push((t.device.clone(), 1)),
        }
    }
    let ran: Vec<String> = ran.iter().map(|(d, n)| format!("{d} {n}")).collect();
    // Kernels in run order: each change of device starts another subgraph.
    let kernels = compiled.kernels();
    let subgraphs = kernels.windows(2).filter(|w| w[0].device != w[1].device).count() + usize::from(!kernels.is_empty());
    println!("{} on {} ({level}): kernels run per device: {}", model.display(), compiled.device(), ran.join(", "));
    println!("{subgraphs} subgraphs");
    Ok(all_match)
}

/// `DIR/{stem}_0.npy` … `DIR/{stem}_{n-1}.npy`.
fn numbered(dir: &Path, stem: &str, n: usize) -> Result<Vec<Tensor>, String> {
    (0..n).map(|k| kiln_runtime::npy::read(&dir.join(format!("{stem}_{k}.npy")))).collect()
}

fn compare(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    let mut worst = 0.0f64;
    for (i, (a, b)) in got.to_f64_vec().into_iter().zip(want.to_f64_vec()).enumerate() {
        let d = (a - b).abs();
        if !(d <= 1e-5 + 1e-4 * b.abs()) {
            return Err(format!("element {i}: {a} vs {b}"));
        }
        worst = worst.max(d);
    }
    Ok(worst)
}
