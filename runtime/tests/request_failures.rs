//! A device that panics mid-run is a bug, but every way of running a request still ends in
//! an error for the caller: `wait`, a callback, an async queue's callback (whose slot is
//! given back, so later starts do not block).

use kiln_runtime::backends::{Executable, Result};
use kiln_runtime::{Backend, CompileOptions, Kernel, Program, Registry};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/small_cnn/model.onnx");

struct Panics;

impl Backend for Panics {
    fn name(&self) -> &str {
        "PANICS"
    }
    fn supports(&self, _: &Kernel) -> bool {
        true
    }
    fn compile(&self, _: &Program, _: &CompileOptions) -> Result<Executable> {
        Ok(Executable::new(|_, _| panic!("a device bug")))
    }
}

fn compiled() -> kiln_runtime::CompiledModel {
    let mut registry = Registry::with_builtin();
    registry.register(Arc::new(Panics));
    let model = kiln_runtime::load(MODEL).unwrap();
    kiln_runtime::compile_in(&registry, &model, "PANICS", &CompileOptions::default()).unwrap()
}

fn input() -> Vec<kiln_runtime::ir::Tensor> {
    vec![kiln_runtime::npy::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/small_cnn/input_0.npy").as_ref()).unwrap()]
}

const MESSAGE: &str = "runtime: internal error (a bug): the run panicked: a device bug";

#[test]
fn a_panicking_run_reaches_wait_as_an_error() {
    let e = compiled().start(input()).wait().unwrap_err();
    assert_eq!(e.to_string(), MESSAGE);
}

#[test]
fn a_panicking_run_reaches_the_callback_as_an_error() {
    let (tx, rx) = mpsc::channel();
    compiled().start_with_callback(input(), move |r| tx.send(r.map_err(|e| e.to_string())).unwrap());
    // Before the fix the callback was never called and this timed out.
    let r = rx.recv_timeout(Duration::from_secs(60)).expect("the callback was not called");
    assert_eq!(r.unwrap_err(), MESSAGE);
}

#[test]
fn an_async_queue_survives_panicking_runs_and_callbacks() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let mut queue = kiln_runtime::AsyncQueue::new(&compiled(), 1, move |tag: usize, r| {
        sink.lock().unwrap().push((tag, r.unwrap_err().to_string()));
        if tag == 0 {
            panic!("a callback bug");
        }
    });
    // One slot: each start waits for the previous run's slot, also after its callback panicked.
    for tag in 0..3 {
        queue.start(input(), tag);
    }
    queue.wait_all();
    let got = got.lock().unwrap().clone();
    assert_eq!(got, (0..3).map(|t| (t, MESSAGE.to_string())).collect::<Vec<_>>());
}
