//! Asynchronous requests: `start` returns at once with a [`Pending`] run; `wait` blocks for
//! its outputs, or a callback gets them. Each request in flight runs on its own thread with
//! its own working memory, so any number can be in flight on one compiled model.

use crate::{CompiledModel, Result};
use kiln_ir::Tensor;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Named outputs of one run, in the model's output order.
pub type Outputs = Vec<(String, Tensor)>;

/// A run in flight.
pub struct Pending {
    handle: JoinHandle<Result<Outputs>>,
}

impl Pending {
    /// Blocks until the run ends; its outputs or its error.
    pub fn wait(self) -> Result<Outputs> {
        match self.handle.join() {
            Ok(r) => r,
            // `run` already turns a panic into an error; this is the thread failing otherwise.
            Err(p) => Err(panicked(&*p)),
        }
    }

    /// True once the run has ended (`wait` will not block).
    pub fn is_done(&self) -> bool {
        self.handle.is_finished()
    }
}

impl CompiledModel {
    /// Starts a run on inputs in the model's input order and returns at once.
    pub fn start(&self, inputs: Vec<Tensor>) -> Pending {
        let model = self.clone();
        let handle = std::thread::spawn(move || run(&model, &inputs));
        Pending { handle }
    }

    /// Starts a run and calls `done` with its result on the run's thread when it ends.
    pub fn start_with_callback(&self, inputs: Vec<Tensor>, done: impl FnOnce(Result<Outputs>) + Send + 'static) {
        let model = self.clone();
        std::thread::spawn(move || done(run(&model, &inputs)));
    }
}

/// One run on a request thread. A device that panics is a bug, but the caller waiting on
/// the run still gets an error (a callback its call), not a thread that ends silently.
fn run(model: &CompiledModel, inputs: &[Tensor]) -> Result<Outputs> {
    catch_unwind(AssertUnwindSafe(|| model.request().infer_ordered(inputs))).unwrap_or_else(|p| Err(panicked(&*p)))
}

fn panicked(payload: &(dyn Any + Send)) -> crate::Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    crate::Error::Device(kiln_backends::BackendError::new("runtime", format!("internal error (a bug): the run panicked: {message}")))
}

/// Gives a queue slot back when dropped, so a callback that panics still frees its slot.
struct FreeSlot(mpsc::SyncSender<()>);

impl Drop for FreeSlot {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// OpenVINO's AsyncInferQueue: at most `size` runs in flight; `start` blocks while the queue
/// is full; each result goes to the callback with the tag given at `start`.
pub struct AsyncQueue<T: Send + 'static> {
    model: CompiledModel,
    slots: (mpsc::SyncSender<()>, mpsc::Receiver<()>),
    in_flight: Vec<JoinHandle<()>>,
    callback: std::sync::Arc<dyn Fn(T, Result<Outputs>) + Send + Sync>,
}

impl<T: Send + 'static> AsyncQueue<T> {
    pub fn new(model: &CompiledModel, size: usize, callback: impl Fn(T, Result<Outputs>) + Send + Sync + 'static) -> AsyncQueue<T> {
        let size = size.max(1);
        let (tx, rx) = mpsc::sync_channel(size);
        for _ in 0..size {
            let _ = tx.send(());
        }
        AsyncQueue { model: model.clone(), slots: (tx, rx), in_flight: Vec::new(), callback: std::sync::Arc::new(callback) }
    }

    /// Starts a run once a slot is free.
    pub fn start(&mut self, inputs: Vec<Tensor>, tag: T) {
        let _ = self.slots.1.recv();
        let (model, free, callback) = (self.model.clone(), self.slots.0.clone(), self.callback.clone());
        self.in_flight.retain(|h| !h.is_finished());
        self.in_flight.push(std::thread::spawn(move || {
            let _free = FreeSlot(free);
            callback(tag, run(&model, &inputs));
        }));
    }

    /// Blocks until every started run has called back.
    pub fn wait_all(&mut self) {
        for h in self.in_flight.drain(..) {
            let _ = h.join();
        }
    }
}

impl<T: Send + 'static> Drop for AsyncQueue<T> {
    fn drop(&mut self) {
        self.wait_all();
    }
}
