//! HETERO: each kernel runs on the first listed device that supports it, and the results
//! are what one device alone computes.

use kiln_runtime::backends::{Backend, BackendError, CompileOptions, Executable, Hetero, Kernel, Program, Reference, Result};
use kiln_runtime::ir::{Op, Tensor};
use kiln_runtime::{compile_in, CompiledModel, Format, Level, Model, Registry};
use std::sync::Arc;

const SMALL_CNN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/small_cnn/model.onnx");
const SMALL_CNN_INPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/small_cnn/input_0.npy");

/// REFERENCE under another name, refusing every kernel that holds one of `refuses` (a fused
/// kernel holds its body's ops). Compiling a refused kernel is an error, so a test passes
/// only if HETERO never hands it one.
struct Picky {
    name: String,
    refuses: &'static [&'static str],
}

fn holds_refused(op: &Op, refuses: &[&str]) -> bool {
    refuses.contains(&op.name()) || op.subgraphs().iter().any(|g| g.nodes.node_weights().any(|n| holds_refused(&n.op, refuses)))
}

impl Backend for Picky {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, kernel: &Kernel) -> bool {
        !holds_refused(&kernel.node.op, self.refuses)
    }

    fn compile(&self, program: &Program, options: &CompileOptions) -> Result<Executable> {
        if let Some(n) = program.graph.nodes.node_weights().find(|n| holds_refused(&n.op, self.refuses)) {
            return Err(BackendError { device: self.name.clone(), node: Some(n.name.clone()), message: "was given a kernel it refused".into() });
        }
        let inner = Reference.compile(program, options)?;
        let name = self.name.clone();
        Ok(Executable::new(move |inputs, profile| match profile {
            Some(timings) => {
                let start = timings.len();
                let outputs = inner.run(inputs, Some(&mut *timings));
                for t in &mut timings[start..] {
                    t.device = name.clone();
                }
                outputs
            }
            None => inner.run(inputs, None),
        }))
    }
}

/// The runtime's devices plus PICKY, which refuses relu and softmax.
fn registry() -> Registry {
    let mut r = kiln_runtime::registry();
    r.register(Arc::new(Picky { name: "PICKY".into(), refuses: &["relu", "softmax", "pool"] }));
    r
}

/// Two branches from one input that meet again, a constant read on both devices, a
/// two-output node crossing a boundary, and a graph input returned as it is.
const BRANCHES: &str = r#"graph g(%x: f32[2,3]) -> (%y: f32[2,3], %s: f32[2,3], %same: f32[2,3]) {
  @c = f32[3] [0.5, -1, 2]
  @sizes = i64[2] [1, 2]
  %0 = relu(%x) : f32[2,3] "r1"
  %1 = sigmoid(%x) : f32[2,3] "s1"
  %2 = mul(%0, @c) : f32[2,3] "r2"
  %3 = mul(%1, @c) : f32[2,3] "s2"
  %4 = relu(%2) : f32[2,3] "r3"
  %5 = add(%4, %3) : f32[2,3] "sum"
  %6 = softmax(%5) {axis=1} : f32[2,3] "sm"
  %7 = split(%6, @sizes) {axis=1} : (f32[2,1], f32[2,2]) "halves"
  %8 = concat(%7.1, %7.0) {axis=1} : f32[2,3] "swap"
  return %8, %1, %x
}"#;

fn model(text: &str) -> Model {
    let graph = kiln_runtime::ir::text::parse(text, None).unwrap();
    kiln_runtime::ir::verify(&graph).unwrap();
    Model { graph, path: "test.kir".into(), format: Format::Kir }
}

fn small_cnn() -> Model {
    kiln_runtime::load(SMALL_CNN).unwrap()
}

fn at(level: Level) -> CompileOptions {
    CompileOptions { level, ..Default::default() }
}

fn compile(model: &Model, device: &str, level: Level) -> CompiledModel {
    compile_in(&registry(), model, device, &at(level)).unwrap_or_else(|e| panic!("{device}: {e}"))
}

fn run(compiled: &CompiledModel, inputs: &[Tensor]) -> Vec<(String, Tensor)> {
    compiled.request().infer_ordered(inputs).unwrap()
}

fn branches_input() -> Vec<Tensor> {
    vec![Tensor::new(vec![2, 3], vec![-1.5f32, 0.25, 2.0, 0.75, -0.5, 3.0]).unwrap()]
}

/// Scaled copies of the shipped input, so each request computes something different.
fn small_cnn_input(k: usize) -> Vec<Tensor> {
    let x = kiln_runtime::npy::read(SMALL_CNN_INPUT.as_ref()).unwrap();
    let v: Vec<f32> = x.as_slice::<f32>().unwrap().iter().map(|&a| a * (1.0 + k as f32 / 8.0)).collect();
    vec![Tensor::new(x.shape().to_vec(), v).unwrap()]
}

/// Within the zoo's tolerance (rtol 1e-4, atol 1e-5): the CPU's kernels round differently
/// from `ir::eval`.
fn assert_close(got: &[(String, Tensor)], want: &[(String, Tensor)]) {
    assert_eq!(got.len(), want.len());
    for ((gn, g), (wn, w)) in got.iter().zip(want) {
        assert_eq!(gn, wn);
        assert_eq!(g.shape(), w.shape(), "{gn}");
        for (i, (a, b)) in g.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
            assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{gn}[{i}]: {a} vs {b}");
        }
    }
}

fn devices_of(compiled: &CompiledModel) -> Vec<String> {
    compiled.kernels().into_iter().map(|k| k.device).collect()
}

#[test]
fn each_kernel_runs_on_the_first_listed_device_that_takes_it() {
    let m = model(BRANCHES);
    let compiled = compile(&m, "HETERO:PICKY,REFERENCE", Level::O0);
    assert_eq!(compiled.device(), "HETERO:PICKY,REFERENCE");
    let placed: Vec<(String, String)> = compiled.kernels().into_iter().map(|k| (k.nodes.join(","), k.device)).collect();
    let on = |node: &str| placed.iter().find(|(n, _)| n == node).unwrap_or_else(|| panic!("{node} in {placed:?}")).1.as_str();
    for node in ["r1", "r3", "sm"] {
        assert_eq!(on(node), "REFERENCE", "{node}");
    }
    for node in ["s1", "r2", "s2", "sum", "swap"] {
        assert_eq!(on(node), "PICKY", "{node}");
    }
    // The same op evaluator on both devices: equal to the last bit.
    assert_eq!(run(&compiled, &branches_input()), run(&compile(&m, "REFERENCE", Level::O0), &branches_input()));
}

/// Two chains that share nothing until their last kernel, each on its own device.
const TWO_CHAINS: &str = r#"graph g(%x: f32[4]) -> (%y: f32[4]) {
  %0 = relu(%x) : f32[4] "a1"
  %1 = neg(%x) : f32[4] "b1"
  %2 = relu(%0) : f32[4] "a2"
  %3 = neg(%1) : f32[4] "b2"
  %4 = add(%2, %3) : f32[4] "join"
  return %4
}"#;

/// Node names of each piece of HETERO:PICKY,REFERENCE's partition, with the device index.
fn pieces(text: &str) -> Vec<(usize, Vec<String>)> {
    let m = model(text);
    let picky: Arc<dyn Backend> = Arc::new(Picky { name: "PICKY".into(), refuses: &["relu", "softmax"] });
    let hetero = Hetero::new(vec![picky, Arc::new(Reference)]).unwrap();
    let parts = hetero.partition(&m.graph).unwrap();
    parts.iter().map(|(d, nodes)| (*d, nodes.iter().map(|&n| m.graph.node(n).name.clone()).collect())).collect()
}

fn piece(device: usize, nodes: &[&str]) -> (usize, Vec<String>) {
    (device, nodes.iter().map(|n| n.to_string()).collect())
}

#[test]
fn kernels_ready_on_the_current_device_go_first_so_the_pieces_are_few() {
    // The plain topological order a1 b1 a2 b2 join switches device at every kernel.
    assert_eq!(pieces(TWO_CHAINS), vec![piece(1, &["a1", "a2"]), piece(0, &["b1", "b2", "join"])]);
    // r1 → r2 → r3 → sum → sm → halves alternate devices: six pieces are the fewest.
    assert_eq!(
        pieces(BRANCHES),
        vec![
            piece(1, &["r1"]),
            piece(0, &["s1", "r2", "s2"]),
            piece(1, &["r3"]),
            piece(0, &["sum"]),
            piece(1, &["sm"]),
            piece(0, &["halves", "swap"]),
        ]
    );
    let m = model(TWO_CHAINS);
    let x = vec![Tensor::new(vec![4], vec![-2.0f32, -0.5, 0.5, 2.0]).unwrap()];
    let want = run(&compile(&m, "REFERENCE", Level::O0), &x);
    assert_eq!(run(&compile(&m, "HETERO:PICKY,REFERENCE", Level::O0), &x), want);
    assert_eq!(want[0].1.as_slice::<f32>().unwrap(), &[-2.0f32, -0.5, 1.0, 4.0]);
}

#[test]
fn small_cnn_on_two_devices_matches_reference_at_every_level() {
    let m = small_cnn();
    let x = small_cnn_input(0);
    for level in [Level::O0, Level::O1, Level::O2] {
        let want = run(&compile(&m, "REFERENCE", level), &x);
        // PICKY is REFERENCE under another name: bit-identical.
        let compiled = compile(&m, "HETERO:PICKY,REFERENCE", level);
        let devices = devices_of(&compiled);
        assert!(devices.iter().any(|d| d == "PICKY") && devices.iter().any(|d| d == "REFERENCE"), "{level}: {devices:?}");
        assert_eq!(run(&compiled, &x), want, "{level}");
        for device in ["HETERO:PICKY,CPU", "HETERO:CPU,REFERENCE", "hetero: cpu , reference"] {
            assert_close(&run(&compile(&m, device, level), &x), &want);
        }
    }
}

#[test]
fn the_profile_keeps_each_kernels_device() {
    let m = small_cnn();
    let compiled = compile(&m, "HETERO:PICKY,CPU", Level::O2);
    let mut request = compiled.request();
    request.set_profiling(true);
    request.infer_ordered(&small_cnn_input(0)).unwrap();
    let profiled: Vec<&str> = request.profile().iter().map(|t| t.device.as_str()).collect();
    assert!(profiled.contains(&"PICKY") && profiled.contains(&"CPU"), "{profiled:?}");
    // Every profiled node is one the plan put on that device.
    let planned = compiled.kernels();
    for t in request.profile() {
        for node in &t.nodes {
            assert!(planned.iter().any(|k| k.device == t.device && k.nodes.contains(node)), "{node} on {}: {planned:?}", t.device);
        }
    }
}

#[test]
fn eight_requests_in_flight_equal_sequential_runs() {
    let compiled = compile(&small_cnn(), "HETERO:PICKY,CPU", Level::O2);
    let sequential: Vec<_> = (0..8).map(|k| run(&compiled, &small_cnn_input(k))).collect();
    let pending: Vec<_> = (0..8).map(|k| compiled.start(small_cnn_input(k))).collect();
    let parallel: Vec<_> = pending.into_iter().map(|p| p.wait().unwrap()).collect();
    assert_eq!(parallel, sequential);
    assert_ne!(sequential[0], sequential[1]);
}

fn compile_error(device: &str) -> String {
    match compile_in(&registry(), &model(BRANCHES), device, &at(Level::O0)) {
        Ok(_) => panic!("{device} compiled"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_device_lists_are_errors_that_say_what_is_wrong() {
    let e = compile_error("HETERO:CPU,NOPE");
    assert!(e.contains("NOPE") && e.contains("no such device"), "{e}");
    for empty in ["HETERO:", "HETERO", "hetero: , "] {
        let e = compile_error(empty);
        assert!(e.starts_with("HETERO: needs the devices"), "{empty}: {e}");
    }
    let e = compile_error("HETERO:CPU,,REFERENCE");
    assert!(e.contains("empty device name"), "{e}");
    let e = compile_error("HETERO:HETERO:CPU,REFERENCE");
    assert!(e.contains("cannot list another HETERO"), "{e}");
}

#[test]
fn symbolic_dims_cross_device_boundaries() {
    let m = model(&BRANCHES.replace("[2,", "[N,"));
    let want = run(&compile(&m, "REFERENCE", Level::O2), &branches_input());
    for device in ["HETERO:PICKY,REFERENCE", "HETERO:PICKY,CPU"] {
        let compiled = compile(&m, device, Level::O2);
        assert!(devices_of(&compiled).iter().any(|d| d == "PICKY"), "{device}");
        assert_close(&run(&compiled, &branches_input()), &want);
    }
}

#[test]
fn a_kernel_no_listed_device_takes_is_an_error_naming_it_and_the_devices() {
    let e = compile_error("HETERO:PICKY");
    assert!(e.contains("r1") && e.contains("relu") && e.contains("tried PICKY"), "{e}");
}

#[test]
fn a_family_of_devices_resolves_names_with_an_argument() {
    let mut r = registry();
    r.register_family("PICKY", |arg| Ok(Arc::new(Picky { name: format!("PICKY:{arg}"), refuses: &["relu"] }) as Arc<dyn Backend>));
    let compiled = compile_in(&r, &model(BRANCHES), "HETERO:picky:7,REFERENCE", &at(Level::O0)).unwrap();
    assert_eq!(compiled.device(), "HETERO:PICKY:7,REFERENCE");
    assert!(devices_of(&compiled).contains(&"PICKY:7".to_string()));
    // A registered name wins over the family.
    assert_eq!(r.resolve("picky").unwrap().name(), "PICKY");
    let e = r.resolve("NOPE:1").err().unwrap().to_string();
    assert!(e.contains("no such device") && e.contains("PICKY:N"), "{e}");
}
