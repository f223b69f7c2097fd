//! The model-zoo suite: every model that `../shared/models/make_models.py` wrote (see
//! `tools/make-zoo.sh`), run on a device and compared with its reference outputs
//! (rtol 1e-4, atol 1e-5). For ONNX it also checks the saved form: `.kir` gives
//! bit-identical outputs, and `--fp16` stays within rtol 1e-2 with a .bin half the size.
//!
//! `zoo [--device D] [-O N] [--suite NAME] [--models a,b] [--update] ZOO_DIR`: the suite
//! names the expected-failures list, `tests/expected-failures/NAME-DEVICE.txt` (default
//! `zoo`). `-O` (default 2) is the passes' level; above 0 every format's outputs must also
//! equal its own -O0 run within rtol 1e-4, atol 1e-5.

use kiln_ir::Tensor;
use kiln_runtime::Level;
use kiln_tests::conformance::{Target, LEVELS_ATOL, LEVELS_RTOL};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let mut device = "REFERENCE".to_string();
    let mut only: Option<Vec<String>> = None;
    let mut root = None;
    let mut suite = "zoo".to_string();
    let mut update = false;
    let mut level = Level::O2;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" | "-d" => device = args.next().expect("--device takes a name"),
            "--update" => update = true,
            "-O" | "--opt" => level = args.next().expect("-O takes 0, 1 or 2").parse().unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2)
            }),
            l if l.starts_with("-O") => level = l.parse().unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2)
            }),
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
    // `HETERO:CPU,REFERENCE` lists in zoo-hetero-cpu-reference.txt: no `:` or `,` in file names.
    let file_device = device.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let expected_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("expected-failures").join(format!("{suite}-{file_device}.txt"));
    let expected = kiln_tests::conformance::read_expected(&expected_path);
    let (mut passed, mut failed, mut problems) = (0, 0, vec![]);
    let mut failures = std::collections::BTreeMap::new();
    for dir in &models {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        for (check, result) in check_model(dir, &Target::new(&device, level), &suite) {
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
                    // a listed failure keeps its hand-written reason when the list is rewritten
                    let why = expected.get(&key).filter(|w| !w.is_empty()).cloned().unwrap_or_else(|| e.replace(&format!("{}/", dir.display()), ""));
                    failures.insert(key.clone(), why);
                    let listed = expected.contains_key(&key);
                    println!("FAIL {key}: {e}{}", if listed { " (expected, see the list)" } else { "" });
                    if !listed {
                        problems.push(format!("unexpected failure: {key}"));
                    }
                }
            }
        }
    }
    println!("{suite} on {device} {level}: {passed} passed, {failed} failed ({} listed in {})", expected.len(), expected_path.display());
    if update {
        if only.is_some() {
            eprintln!("--update needs a run over every model (no --models)");
            std::process::exit(2);
        }
        let mut text = format!(
            "# {suite} checks that fail on {device}, one per line with the reason. The {suite} run fails on a\n\
             # failure missing here and on a listed check that passes.\n\
             # Regenerate with: cargo run --release -p kiln-tests --bin zoo -- --suite {suite} --device {device} --update DIR\n"
        );
        for (k, why) in &failures {
            let why: String = why.chars().take(200).collect();
            text += &format!("{k}  # {why}\n");
        }
        std::fs::write(&expected_path, text).expect("writing the expected-failures list");
        println!("wrote {}", expected_path.display());
        return;
    }
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

fn run(model: &kiln_runtime::Model, target: &Target, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    run_at(model, target, target.level, inputs).map(|(out, _)| out)
}

/// Outputs, and the number of kernels the device ran.
fn run_at(model: &kiln_runtime::Model, target: &Target, level: Level, inputs: &[Tensor]) -> Result<(Vec<Tensor>, usize), String> {
    let compiled = target.compile_at(model, level)?;
    let out = compiled.request().infer_ordered(inputs).map_err(|e| e.to_string())?;
    let kernels = kiln_passes::op_count(&compiled.program().graph);
    Ok((out.into_iter().map(|(_, t)| t).collect(), kernels))
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

/// The model's input order as indices into `input_K.npy`: a model input named like the
/// K-th entry of meta.json's `keras_inputs` or `tf_inputs` (TF's `:0` suffix aside) takes
/// `input_K`; otherwise inputs go in file order.
fn input_order(dir: &Path, model: &kiln_runtime::Model) -> Vec<usize> {
    let meta: serde_json::Value = std::fs::read_to_string(dir.join("meta.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let names = |key: &str| -> Vec<String> {
        meta[key].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).map(|s| s.trim_end_matches(":0").to_string()).collect()).unwrap_or_default()
    };
    let (keras, tf) = (names("keras_inputs"), names("tf_inputs"));
    model
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let name = name.trim_end_matches(":0");
            keras.iter().position(|n| n == name).or_else(|| tf.iter().position(|n| n == name)).unwrap_or(i)
        })
        .collect()
}

/// Loads and runs one format of a zoo model; the outputs and a note.
fn check_format(dir: &Path, file: &Path, target: &Target, inputs: &[Tensor], want: &[Tensor]) -> Result<(kiln_runtime::Model, Vec<Tensor>, String), String> {
    let t = Instant::now();
    let model = kiln_runtime::load(file).map_err(|e| e.to_string())?;
    let order = input_order(dir, &model);
    let ins: Vec<Tensor> = order.iter().map(|&k| inputs.get(k).cloned().ok_or(format!("no input_{k}.npy"))).collect::<Result<_, _>>()?;
    let (got, kernels) = run_at(&model, target, target.level, &ins)?;
    // Issue 7 holds OpenCL devices to rtol 1e-3, atol 1e-4 (f32 sums in another order).
    let (rtol, atol) = if target.device.to_ascii_uppercase().starts_with("OPENCL") { (1e-3, 1e-4) } else { (1e-4, 1e-5) };
    let d = compare(&got, want, rtol, atol)?;
    let mut note = format!("max abs diff {d:.2e}, {kernels} kernels at {}", target.level);
    if target.level > Level::O0 {
        let (base, base_kernels) = run_at(&model, target, Level::O0, &ins)?;
        let dl = compare(&got, &base, LEVELS_RTOL, LEVELS_ATOL).map_err(|e| format!("{} differs from -O0: {e}", target.level))?;
        note += &format!(" ({base_kernels} at -O0, max abs diff to it {dl:.2e})");
    }
    Ok((model, got, format!("{note} ({:.1} s)", t.elapsed().as_secs_f64())))
}

fn check_model(dir: &Path, device: &Target, suite: &str) -> Vec<(String, Result<String, String>)> {
    let mut results = vec![];
    let (inputs, want) = match reference_io(dir) {
        Ok(x) => x,
        Err(e) => return vec![("reference data".into(), Err(e))],
    };
    // What -O2 makes of each format that loads, for the structural checks.
    let mut optimized = Vec::new();
    let mut keep = |format: &str, m: &kiln_runtime::Model| {
        if device.level == Level::O2 {
            if let Ok(g) = kiln_tests::pass_checks::optimized(&m.graph) {
                optimized.push((format.to_string(), g));
            }
        }
    };
    for format in ["model.keras", "model.h5", "frozen.pb", "saved_model"] {
        let file = dir.join(format);
        if file.exists() {
            let r = check_format(dir, &file, device, &inputs, &want);
            if let Ok((m, _, _)) = &r {
                keep(format, m);
            }
            results.push((format.to_string(), r.map(|(_, _, note)| note)));
        }
    }
    let (model, got) = match check_format(dir, &dir.join("model.onnx"), device, &inputs, &want) {
        Ok((m, g, note)) => {
            keep("model.onnx", &m);
            results.push(("model.onnx".into(), Ok(note)));
            (m, g)
        }
        Err(e) => {
            results.push(("model.onnx".into(), Err(e)));
            return results;
        }
    };
    results.extend(kiln_tests::pass_checks::check(&optimized, suite == "zoo"));
    let inputs: Vec<Tensor> = input_order(dir, &model).iter().map(|&k| inputs[k].clone()).collect();

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
