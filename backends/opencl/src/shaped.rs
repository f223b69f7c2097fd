//! A graph whose shapes are settled per run: compiled plans, one per set of input shapes
//! (a model with symbolic dims compiles again for each new shape it is run with), or per
//! set of shapes and small input values when its shapes depend on those values. The model
//! itself, a control-flow body and the rest of a graph after a loop are each one.

use crate::device::ClDevice;
use crate::plan::{self, DevTensor, DEVICE};
use crate::specialize;
use kiln_backends::{BackendError, Result};
use kiln_ir::{Graph, Tensor};
use opencl3::command_queue::CommandQueue;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The shapes of a run's inputs, and the values of the inputs pinned as constants (only
/// for graphs whose shapes depend on input values).
type PlanKey = (Vec<Vec<usize>>, Vec<Option<Tensor>>);

pub struct Shaped {
    graph: Graph,
    device: Arc<ClDevice>,
    plans: Mutex<Vec<(PlanKey, Arc<plan::Plan>)>>,
    /// Input shapes under which the graph's shapes (or a kernel's axis, see
    /// `specialize::decisive_inputs_known`) still depend on input values.
    needs_values: Mutex<HashSet<Vec<Vec<usize>>>>,
}

fn key_eq(a: &PlanKey, b: &PlanKey) -> bool {
    a.0 == b.0
        && a.1.len() == b.1.len()
        && a.1.iter().zip(&b.1).all(|(x, y)| match (x, y) {
            (None, None) => true,
            (Some(x), Some(y)) => x.dtype() == y.dtype() && x.shape() == y.shape() && x.to_f64_vec() == y.to_f64_vec(),
            _ => false,
        })
}

/// Where pinned input values come from when a plan needs them: the run's host tensors, or
/// a read-back of the device tensors of a sub-plan's run.
pub enum Values<'a> {
    /// At compile time: none yet.
    None,
    Host(&'a [Tensor]),
    Device(&'a CommandQueue, &'a [DevTensor]),
}

impl Shaped {
    pub fn new(graph: Graph, device: Arc<ClDevice>) -> Shaped {
        Shaped { graph, device, plans: Mutex::new(Vec::new()), needs_values: Mutex::new(HashSet::new()) }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    fn cached(&self, key: &PlanKey) -> Option<Arc<plan::Plan>> {
        let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        plans.iter().find(|(k, _)| key_eq(k, key)).map(|(_, p)| p.clone())
    }

    /// The plan for `shapes` (None at compile time, when a graph whose shapes need input
    /// values is left for the first run).
    pub fn plan(&self, shapes: Vec<Vec<usize>>, values: &Values) -> Result<Option<Arc<plan::Plan>>> {
        let needs_values = self.needs_values.lock().unwrap_or_else(|e| e.into_inner()).contains(&shapes);
        let given: Vec<Option<Vec<usize>>> = shapes.iter().cloned().map(Some).collect();
        let pinned: Vec<Option<Tensor>> = match (needs_values, values) {
            (false, _) => vec![None; shapes.len()],
            (true, Values::None) => return Ok(None),
            (true, Values::Host(ts)) => ts.iter().enumerate().map(|(i, t)| Some(t.clone()).filter(|t| specialize::pinnable(&self.graph, i, t))).collect(),
            (true, Values::Device(queue, ts)) => ts
                .iter()
                .enumerate()
                .map(|(i, t)| if specialize::pinnable_type(&self.graph, i, t.dtype, &t.shape) { plan::read(queue, t).map(Some) } else { Ok(None) })
                .collect::<Result<_>>()?,
        };
        let key = (shapes.clone(), pinned.clone());
        if let Some(p) = self.cached(&key) {
            return Ok(Some(p));
        }
        let g = specialize::specialize(&self.graph, &given, &pinned).map_err(|e| BackendError::from_ir(DEVICE, e))?;
        if !needs_values && !(specialize::concrete(&g) && specialize::decisive_inputs_known(&g)) {
            self.needs_values.lock().unwrap_or_else(|e| e.into_inner()).insert(shapes.clone());
            return self.plan(shapes, values);
        }
        let p = Arc::new(plan::compile(self.device.clone(), &g)?);
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).push((key, p.clone()));
        Ok(Some(p))
    }

    /// The plan for a sub-plan's run on device tensors (a body, the rest after a loop).
    pub fn plan_dev(&self, queue: &CommandQueue, inputs: &[DevTensor]) -> Result<Arc<plan::Plan>> {
        let shapes = inputs.iter().map(|t| t.shape.clone()).collect();
        self.plan(shapes, &Values::Device(queue, inputs))?
            .ok_or_else(|| BackendError::new(DEVICE, format!("no plan for the inputs of `{}`", self.graph.name)))
    }
}
