//! The model-zoo suite: every model that `../shared/models/make_models.py` wrote (see
//! `tools/make-zoo.sh`), run on a device and compared with its reference outputs
//! (rtol 1e-4, atol 1e-5). For ONNX it also checks the saved form: `.kir` gives
//! bit-identical outputs, and `--fp16` stays within rtol 1e-2 with a .bin half the size.
//!
//! `zoo [--device D] [--suite NAME] [--models a,b] ZOO_DIR`: the suite names the
//! expected-failures list, `tests/expected-failures/NAME-DEVICE.txt` (default `zoo`).

use kiln_ir::Tensor;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let mut device = "REFERENCE".to_string();
    let mut only: Option<Vec<String>> = None;
    let mut root = None;
    let mut suite = "zoo".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" | "-d" => device = args.next().expect("--device takes a name"),
            "--suite" => suite = args.next().expect("--suite takes a name"),
            "--models" => only = Some(args.next().expect("--models takes a list").split(',').map(String::from).collect()),
            _ => root = Some(PathBuf::from(a)),
        }
    }
    let root = root.unwrap_or_else(|| {
        eprintln!("usage: zoo [--device D] [--models a,b] ZOO_DIR  (build it with tools/make-zoo.sh)");
        std::process::exit(2)
    });
    let mut models: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            eprintln!("{}: {e}", root.display());
            std::process::exit(1)
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("meta.json").exists())
        .filter(|p| only.as_ref().map_or(true, |o| o.iter().any(|m| p.ends_with(m))))
        .collect();
    models.sort();
    let expected_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("expected-failures").join(format!("{suite}-{}.txt", device.to_ascii_lowercase()));
    let expected = kiln_tests::conformance::read_expected(&expected_path);
    let (mut passed, mut failed, mut problems) = (0, 0, vec![]);
    for dir in &models {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        for (check, result) in check_model(dir, &device) {
            let key = format!("{name}/{check}");
            match result {
                Ok(note) => {
                    passed += 1;
                    println!("ok   {key}: {note}");
                    if expected.contains_key(&key) {
                        problems.push(format!("listed as failing but passes now: {key}"));
                    }
                }
                Err(e) => {
                    failed += 1;
                    let listed = expected.contains_key(&key);
                    println!("FAIL {key}: {e}{}", if listed { " (expected, see the list)" } else { "" });
                    if !listed {
                        problems.push(format!("unexpected failure: {key}"));
                    }
                }
            }
        }
    }
    println!("{suite} on {device}: {passed} passed, {failed} failed ({} listed in {})", expected.len(), expected_path.display());
    for p in &problems {
        println!("  {p}");
    }
    if !problems.is_empty() || passed == 0 {
        std::process::exit(1);
    }
}

fn reference_io(dir: &Path) -> Result<(Vec<Tensor>, Vec<Tensor>), String> {
    let mut ins = vec![];
    let mut outs = vec![];
    for k in 0.. {
        let p = dir.join(format!("input_{k}.npy"));
        if !p.exists() {
            break;
        }
        ins.push(kiln_runtime::npy::read(&p)?);
    }
    for k in 0.. {
        let p = dir.join(format!("output_{k}.npy"));
        if !p.exists() {
            break;
        }
        outs.push(kiln_runtime::npy::read(&p)?);
    }
    Ok((ins, outs))
}

fn run(model: &kiln_runtime::Model, device: &str, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    let compiled = kiln_runtime::compile(model, device).map_err(|e| e.to_string())?;
    let out = compiled.request().infer_ordered(inputs).map_err(|e| e.to_string())?;
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

fn compare(got: &[Tensor], want: &[Tensor], rtol: f64, atol: f64) -> Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    let mut worst = 0.0f64;
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        if g.shape() != w.shape() {
            return Err(format!("output {k}: shape {:?}, expected {:?}", g.shape(), w.shape()));
        }
        for (i, (a, b)) in g.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
            let d = (a - b).abs();
            if !(d <= atol + rtol * b.abs()) {
                return Err(format!("output {k} element {i}: {a} vs {b}"));
            }
            worst = worst.max(d);
        }
    }
    Ok(worst)
}

fn check_model(dir: &Path, device: &str) -> Vec<(String, Result<String, String>)> {
    let mut results = vec![];
    let onnx = dir.join("model.onnx");
    let (inputs, want) = match reference_io(dir) {
        Ok(x) => x,
        Err(e) => return vec![("reference data".into(), Err(e))],
    };
    let t = Instant::now();
    let model = match kiln_runtime::load(&onnx) {
        Ok(m) => m,
        Err(e) => return vec![("model.onnx".into(), Err(e.to_string()))],
    };
    let got = match run(&model, device, &inputs) {
        Ok(g) => g,
        Err(e) => return vec![("model.onnx".into(), Err(e))],
    };
    results.push((
        "model.onnx".into(),
        compare(&got, &want, 1e-4, 1e-5).map(|d| format!("max abs diff {d:.2e} ({:.1} s)", t.elapsed().as_secs_f64())),
    ));

    let tmp = std::env::temp_dir().join(format!("kiln-zoo-{}-{}", std::process::id(), dir.file_name().unwrap().to_string_lossy()));
    let _ = std::fs::create_dir_all(&tmp);
    // The saved form: bit-identical outputs.
    let kir = tmp.join("model.kir");
    let r = kiln_ir::kir::save(&model.graph, &kir)
        .map_err(|e| e.to_string())
        .and_then(|_| kiln_runtime::load(&kir).map_err(|e| e.to_string()))
        .and_then(|m| run(&m, device, &inputs))
        .and_then(|k| if k == got { Ok("outputs bit-identical to the .onnx".to_string()) } else { Err("outputs differ from the .onnx".into()) });
    results.push(("model.kir".into(), r));
    // fp16 weights: within rtol 1e-2, half the bytes.
    let kir16 = tmp.join("model16.kir");
    let mut g16 = model.graph.clone();
    kiln_passes::fp16::compress_weights(&mut g16);
    let r = kiln_ir::kir::save(&g16, &kir16)
        .map_err(|e| e.to_string())
        .and_then(|_| kiln_runtime::load(&kir16).map_err(|e| e.to_string()))
        .and_then(|m| run(&m, device, &inputs))
        .and_then(|k| compare(&k, &want, 1e-2, 1e-3))
        .and_then(|d| {
            let size = |p: &Path| std::fs::metadata(format!("{}.bin", p.display())).map(|m| m.len()).unwrap_or(0);
            let (full, half) = (size(&kir), size(&kir16));
            let ratio = half as f64 / full.max(1) as f64;
            if ratio <= 0.55 {
                Ok(format!("max abs diff {d:.2e}; .bin {full} -> {half} bytes ({ratio:.2})"))
            } else {
                Err(format!(".bin {full} -> {half} bytes ({ratio:.2}), not half"))
            }
        });
    results.push(("model.kir-fp16".into(), r));
    let _ = std::fs::remove_dir_all(&tmp);
    results
}
