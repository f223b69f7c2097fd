//! The Python classes: a loaded `Model`, a `CompiledModel` that runs requests, and a
//! `Pending` run started with `CompiledModel.start`.

use crate::convert::{signature, to_list, to_tensor};
use crate::{detached, kiln_err, panic_message, KilnError};
use kiln_ir::Tensor;
use kiln_runtime::{CompileOptions, Format, Level, LoadOptions};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};

type Shapes = Option<Vec<(String, Vec<usize>)>>;

fn options(signature: Option<String>, input_shapes: Shapes) -> LoadOptions {
    LoadOptions {
        signature,
        input_shapes: input_shapes.unwrap_or_default(),
    }
}

/// A model loaded into kiln's IR, not yet compiled for a device.
#[pyclass(frozen, module = "kiln._kiln")]
pub struct Model {
    inner: kiln_runtime::Model,
}

#[pymethods]
impl Model {
    /// `[(name, dtype, shape)]`: each dim an int, a symbol's name, or None.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        signature(py, &self.inner.inputs())
    }
    #[getter]
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        signature(py, &self.inner.outputs())
    }
    /// Where the model came from: its path, or the label given to in-memory bytes.
    #[getter]
    fn source(&self) -> String {
        self.inner.path.display().to_string()
    }
    #[getter]
    fn format(&self) -> String {
        format!("{:?}", self.inner.format)
    }
    /// A copy of the model with the named inputs' shapes fixed (and every shape re-inferred).
    fn with_input_shapes(
        &self,
        py: Python<'_>,
        shapes: Vec<(String, Vec<usize>)>,
    ) -> PyResult<Model> {
        let mut m = self.inner.clone();
        detached(py, move || m.set_input_shapes(&shapes).map(|_| m)).map(|inner| Model { inner })
    }
    fn __repr__(&self) -> String {
        format!(
            "<kiln.Model {} ({:?})>",
            self.inner.path.display(),
            self.inner.format
        )
    }
}

#[pyfunction]
#[pyo3(signature = (path, signature=None, input_shapes=None))]
pub fn load(
    py: Python<'_>,
    path: std::path::PathBuf,
    signature: Option<String>,
    input_shapes: Shapes,
) -> PyResult<Model> {
    let options = options(signature, input_shapes);
    detached(py, move || kiln_runtime::load_with(&path, &options)).map(|inner| Model { inner })
}

/// A serialized model in memory; `format` as `onnx`, `pb`, `keras`, `h5` or `kir`, else sniffed.
#[pyfunction]
#[pyo3(signature = (data, format=None, label=None, input_shapes=None))]
pub fn load_bytes(
    py: Python<'_>,
    data: Vec<u8>,
    format: Option<String>,
    label: Option<String>,
    input_shapes: Shapes,
) -> PyResult<Model> {
    let format = format
        .map(|f| Format::from_name(&f))
        .transpose()
        .map_err(kiln_err)?;
    let label = label.unwrap_or_else(|| "<bytes>".into());
    let options = options(None, input_shapes);
    detached(py, move || {
        kiln_runtime::load_bytes(data, format, &label, &options)
    })
    .map(|inner| Model { inner })
}

/// A Keras model from its config JSON (`keras.saving.serialize_keras_object(model)`) and
/// each layer's `layer.weights` as numpy arrays, by layer name.
#[pyfunction]
#[pyo3(signature = (config_json, weights, label, input_shapes=None))]
pub fn load_keras(
    py: Python<'_>,
    config_json: String,
    weights: &Bound<'_, PyDict>,
    label: String,
    input_shapes: Shapes,
) -> PyResult<Model> {
    let mut map: HashMap<String, Vec<Tensor>> = HashMap::new();
    for (name, arrays) in weights.iter() {
        let name: String = name.extract()?;
        let mut ts = Vec::new();
        for (i, a) in arrays.try_iter()?.enumerate() {
            ts.push(to_tensor(&format!("weight {i} of layer `{name}`"), &a?)?);
        }
        map.insert(name, ts);
    }
    detached(py, move || {
        let graph = kiln_bridges::keras::load_config(&config_json, map, &label)
            .map_err(|e| kiln_runtime::Error::Load(e.to_string()))?;
        let mut model = kiln_runtime::Model::from_graph(graph, &label, Format::Keras)?;
        if let Some(shapes) = input_shapes {
            model.set_input_shapes(&shapes)?;
        }
        Ok(model)
    })
    .map(|inner| Model { inner })
}

/// A frozen TensorFlow GraphDef in memory, with its input placeholders and output tensors in
/// order (as a concrete function lists them: `x:0`, `Identity:0`).
#[pyfunction]
#[pyo3(signature = (data, inputs, outputs, label, input_shapes=None))]
pub fn load_graphdef(
    py: Python<'_>,
    data: Vec<u8>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    label: String,
    input_shapes: Shapes,
) -> PyResult<Model> {
    detached(py, move || {
        let ins: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let outs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        let graph = kiln_bridges::tensorflow::load_frozen_bytes(&data, &label, &ins, &outs)
            .map_err(|e| kiln_runtime::Error::Load(e.to_string()))?;
        let mut model = kiln_runtime::Model::from_graph(graph, &label, Format::TfFrozen)?;
        if let Some(shapes) = input_shapes {
            model.set_input_shapes(&shapes)?;
        }
        Ok(model)
    })
    .map(|inner| Model { inner })
}

/// The devices this build can compile for.
#[pyfunction]
pub fn devices() -> Vec<String> {
    kiln_runtime::registry().names()
}

#[pyfunction]
#[pyo3(signature = (model, device="CPU", level=2, threads=0, profile=false))]
pub fn compile(
    py: Python<'_>,
    model: &Model,
    device: &str,
    level: u8,
    threads: usize,
    profile: bool,
) -> PyResult<CompiledModel> {
    let level = match level {
        0 => Level::O0,
        1 => Level::O1,
        2 => Level::O2,
        n => {
            return Err(KilnError::new_err(format!(
                "level must be 0, 1 or 2, was given {n}"
            )))
        }
    };
    let options = CompileOptions {
        threads,
        level,
        ..Default::default()
    };
    let m = model.inner.clone();
    let device = device.to_string();
    let inner = detached(py, move || {
        kiln_runtime::compile_with(&m, &device, &options)
    })?;
    Ok(CompiledModel {
        inner,
        profiling: profile,
        last_profile: Mutex::new(Vec::new()),
    })
}

/// A model compiled for one device. Any number of Python threads may call it at once: each
/// call is its own request, and the GIL is released while kiln computes.
#[pyclass(frozen, module = "kiln._kiln")]
pub struct CompiledModel {
    inner: kiln_runtime::CompiledModel,
    profiling: bool,
    last_profile: Mutex<Vec<kiln_runtime::KernelTiming>>,
}

impl CompiledModel {
    fn tensors(&self, inputs: &Bound<'_, PyAny>) -> PyResult<Vec<Tensor>> {
        let names = self.inner.inputs();
        let mut out = Vec::new();
        for (i, x) in inputs.try_iter()?.enumerate() {
            let what = match names.get(i) {
                Some((n, _)) => format!("input `{n}`"),
                None => format!("input {i}"),
            };
            out.push(to_tensor(&what, &x?)?);
        }
        Ok(out)
    }
}

#[pymethods]
impl CompiledModel {
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        signature(py, self.inner.inputs())
    }
    #[getter]
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        signature(py, self.inner.outputs())
    }
    #[getter]
    fn device(&self) -> String {
        self.inner.device().to_string()
    }
    /// Runs once on numpy arrays in the model's input order; the outputs in its output order.
    fn infer<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let tensors = self.tensors(inputs)?;
        let model = &self.inner;
        let profiling = self.profiling;
        // Borrowed, not moved: the inputs (which may hold numpy arrays) drop here, with the
        // GIL, rather than on the way out of the detached section.
        let given = &tensors;
        let (outs, profile) = detached(py, move || {
            let mut request = model.request();
            request.set_profiling(profiling);
            let outs = request.infer_ordered(given)?;
            Ok((outs, request.profile().to_vec()))
        })?;
        if profiling {
            *self.last_profile.lock().unwrap_or_else(|p| p.into_inner()) = profile;
        }
        let outs: Vec<Tensor> = outs.into_iter().map(|(_, t)| t).collect();
        to_list(py, &outs)
    }

    /// Starts a run and returns at once; `Pending.wait()` gives its outputs.
    fn start(&self, inputs: &Bound<'_, PyAny>) -> PyResult<Pending> {
        let tensors = self.tensors(inputs)?;
        let slot: Arc<Slot> = Arc::new((Mutex::new(None), Condvar::new()));
        let done = slot.clone();
        let model = self.inner.clone();
        // A panic becomes the run's error, so `wait` never blocks forever. (The runtime's
        // start_with_callback does the same since it catches panics; this predates that.)
        let spawned = std::thread::Builder::new()
            .name("kiln-request".into())
            .spawn(move || {
                let run =
                    catch_unwind(AssertUnwindSafe(|| model.request().infer_ordered(&tensors)));
                let r = match run {
                    Ok(Ok(outs)) => Ok(outs.into_iter().map(|(_, t)| t).collect()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(p) => Err(format!(
                        "internal error in kiln (a bug): {}",
                        panic_message(&*p)
                    )),
                };
                *done.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                done.1.notify_all();
            });
        spawned
            .map_err(|e| KilnError::new_err(format!("cannot start a thread for the run: {e}")))?;
        Ok(Pending { slot })
    }

    /// Per-kernel timings of the last call (compile with `profile=True`): dicts with the
    /// kernel's `kind`, the model's `nodes` it covers, the `device` and `ms`.
    fn profile<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for k in self
            .last_profile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let d = PyDict::new(py);
            d.set_item("kind", &k.kind)?;
            d.set_item("nodes", &k.nodes)?;
            d.set_item("device", &k.device)?;
            d.set_item("ms", k.nanos as f64 / 1e6)?;
            out.append(d)?;
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        let names: Vec<&str> = self
            .inner
            .inputs()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        format!(
            "<kiln.CompiledModel on {} inputs={:?}>",
            self.inner.device(),
            names
        )
    }
}

type Slot = (Mutex<Option<Result<Vec<Tensor>, String>>>, Condvar);

/// A run in flight.
#[pyclass(frozen, module = "kiln._kiln")]
pub struct Pending {
    slot: Arc<Slot>,
}

#[pymethods]
impl Pending {
    /// Blocks (without the GIL) until the run ends; its outputs, or a `KilnError`.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let slot = self.slot.clone();
        let r = py.detach(move || {
            let mut guard = slot.0.lock().unwrap_or_else(|p| p.into_inner());
            while guard.is_none() {
                guard = slot.1.wait(guard).unwrap_or_else(|p| p.into_inner());
            }
            guard
                .clone()
                .unwrap_or_else(|| Err("the run vanished".into()))
        });
        match r {
            Ok(outs) => to_list(py, &outs),
            Err(m) => Err(KilnError::new_err(m)),
        }
    }
    /// True once the run has ended (`wait` will not block).
    fn done(&self) -> bool {
        self.slot
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}
