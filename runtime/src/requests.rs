//! Asynchronous requests: `start` returns at once with a [`Pending`] run; `wait` blocks for
//! its outputs, or a callback gets them. Each request in flight runs on its own thread with
//! its own working memory, so any number can be in flight on one compiled model.

use crate::{CompiledModel, Result};
use kiln_ir::Tensor;
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
            // A device that panics is a bug; the caller still gets an error, not a crash.
            Err(_) => Err(crate::Error::Device(kiln_backends::BackendError::new("runtime", "the request's thread panicked"))),
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
        let handle = std::thread::spawn(move || model.request().infer_ordered(&inputs));
        Pending { handle }
    }

    /// Starts a run and calls `done` with its result on the run's thread when it ends.
    pub fn start_with_callback(&self, inputs: Vec<Tensor>, done: impl FnOnce(Result<Outputs>) + Send + 'static) {
        let model = self.clone();
        std::thread::spawn(move || done(model.request().infer_ordered(&inputs)));
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
            callback(tag, model.request().infer_ordered(&inputs));
            let _ = free.send(());
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
