//! HETERO: one model over several devices. Each kernel (a top-level node of the optimized
//! graph; a fused kernel is one node) runs on the first listed device whose
//! [`Backend::supports`] accepts it. Runs of consecutive kernels on one device form a
//! subgraph, which that device compiles as an ordinary [`Program`]; a run executes the
//! subgraphs in order, handing host tensors across the boundaries.
//!
//! HETERO is itself a `Backend`, built only from the other devices' `supports` and
//! `compile`: it knows nothing about any device.

use crate::{Backend, BackendError, CompileOptions, Executable, Kernel, KernelTiming, PlannedKernel, Program, Result};
use kiln_ir::{Graph, NodeId, Op, Tensor, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The device-string prefix (`HETERO:CPU,REFERENCE`).
pub(crate) const PREFIX: &str = "HETERO";

pub(crate) const NEEDS_DEVICES: &str = "needs the devices to use, in order of preference: HETERO:CPU,REFERENCE";

/// The device names in `A,B[,C]`, each trimmed; an empty list or name is an error.
pub(crate) fn parse_list(list: &str) -> std::result::Result<Vec<&str>, String> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if names.iter().all(|n| n.is_empty()) {
        return Err(NEEDS_DEVICES.into());
    }
    if names.iter().any(|n| n.is_empty()) {
        return Err(format!("an empty device name in the list `{list}`"));
    }
    // A nested HETERO's own commas would be read as this list's: one level only.
    if let Some(n) = names.iter().find(|n| n.eq_ignore_ascii_case(PREFIX) || n.to_ascii_uppercase().starts_with("HETERO:")) {
        return Err(format!("cannot list another HETERO (`{n}`)"));
    }
    Ok(names)
}

/// Devices in order of preference.
pub struct Hetero {
    name: String,
    devices: Vec<Arc<dyn Backend>>,
}

impl Hetero {
    pub fn new(devices: Vec<Arc<dyn Backend>>) -> Result<Hetero> {
        if devices.is_empty() {
            return Err(BackendError::new(PREFIX, NEEDS_DEVICES));
        }
        let names: Vec<&str> = devices.iter().map(|d| d.name()).collect();
        Ok(Hetero { name: format!("{PREFIX}:{}", names.join(",")), devices })
    }

    /// The index of the first device that takes `n`, or an error naming the node and the
    /// devices asked.
    fn assign(&self, graph: &Graph, n: NodeId) -> Result<usize> {
        let node = graph.node(n);
        self.devices.iter().position(|d| d.supports(&Kernel { node })).ok_or_else(|| BackendError {
            device: self.name.clone(),
            node: Some(node.name.clone()),
            message: format!(
                "no listed device runs this {} kernel (tried {})",
                node.op.name(),
                self.devices.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
            ),
        })
    }

    /// The graph's kernels cut into runs of one device, in an order in which every run
    /// only reads values of earlier runs.
    ///
    /// A topological order cut into consecutive pieces can never make a cycle between the
    /// pieces, so any topological order is correct; among the kernels ready at each point
    /// this one prefers those on the current device, which keeps the pieces few.
    pub fn partition(&self, graph: &Graph) -> Result<Vec<(usize, Vec<NodeId>)>> {
        let order = graph.topo_order().map_err(|e| BackendError::from_ir(&self.name, e))?;
        let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let is_kernel = |n: NodeId| !matches!(graph.node(n).op, Op::Input | Op::Const { .. });
        let mut device = HashMap::new();
        let mut waiting: HashMap<NodeId, usize> = HashMap::new();
        let mut ready: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); self.devices.len()];
        for &n in order.iter().filter(|&&n| is_kernel(n)) {
            let d = self.assign(graph, n)?;
            device.insert(n, d);
            let mut producers: Vec<NodeId> = graph.inputs_of(n).into_iter().flatten().map(|v| v.node).filter(|&p| is_kernel(p)).collect();
            producers.sort();
            producers.dedup();
            waiting.insert(n, producers.len());
            if producers.is_empty() {
                ready[d].insert(position[&n]);
            }
        }
        let mut parts: Vec<(usize, Vec<NodeId>)> = Vec::new();
        let mut current = 0;
        loop {
            if ready[current].is_empty() || parts.is_empty() {
                // Start, or go on, with the device whose next kernel comes first in the
                // plain order.
                match (0..ready.len()).filter_map(|d| ready[d].first().map(|&p| (p, d))).min() {
                    Some((_, d)) => current = d,
                    None => break,
                }
            }
            let p = ready[current].pop_first().expect("the current device has a ready kernel");
            let n = order[p];
            match parts.last_mut() {
                Some((d, nodes)) if *d == current => nodes.push(n),
                _ => parts.push((current, vec![n])),
            }
            let mut consumers: Vec<NodeId> = (0..graph.node(n).outputs.len()).flat_map(|k| graph.uses_of(Value::new(n, k))).map(|(c, _)| c).collect();
            consumers.sort();
            consumers.dedup();
            for c in consumers {
                if let Some(w) = waiting.get_mut(&c) {
                    *w -= 1;
                    if *w == 0 {
                        ready[device[&c]].insert(position[&c]);
                    }
                }
            }
        }
        Ok(parts)
    }
}

/// One device's piece of a run: where its inputs come from and where its outputs go, as
/// slots of the run's table of values.
struct Stage {
    executable: Executable,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    /// Slots nothing reads after this stage.
    last_reads: Vec<usize>,
}

/// Numbers the values that cross a boundary: graph inputs first, then stage outputs.
#[derive(Default)]
struct Slots(HashMap<Value, usize>);

impl Slots {
    fn of(&mut self, v: Value) -> usize {
        let next = self.0.len();
        *self.0.entry(v).or_insert(next)
    }
}

/// The name a crossing value takes in the subgraphs it leaves and enters.
fn value_name(graph: &Graph, v: Value) -> String {
    let name = &graph.node(v.node).name;
    if v.output == 0 { name.clone() } else { format!("{name}:{}", v.output) }
}

/// The subgraph of `nodes`: values from outside become its inputs (constants are copied
/// in instead, so weights stay with the kernels that read them); values read outside, or
/// that are graph outputs, become its outputs. Returns the subgraph and those two lists.
fn subgraph(graph: &Graph, nodes: &[NodeId], is_output: &dyn Fn(Value, &HashSet<NodeId>) -> bool) -> (Graph, Vec<Value>, Vec<Value>) {
    let mut sub = Graph::new(format!("{}/{}", graph.name, graph.node(nodes[0]).name));
    let mut mapped: HashMap<Value, Value> = HashMap::new();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let inside: HashSet<NodeId> = nodes.iter().copied().collect();
    for &n in nodes {
        let node = graph.node(n);
        let mut args = Vec::new();
        for v in graph.inputs_of(n) {
            let Some(v) = v else {
                args.push(None);
                continue;
            };
            let inner = match mapped.get(&v) {
                Some(&inner) => inner,
                None => {
                    let inner = match graph.const_value(v) {
                        Some(t) => sub.add_const(graph.node(v.node).name.clone(), t.clone()),
                        None => {
                            inputs.push(v);
                            sub.add_input(value_name(graph, v), graph.value_type(v).clone())
                        }
                    };
                    mapped.insert(v, inner);
                    inner
                }
            };
            args.push(Some(inner));
        }
        let id = sub.add_node_typed(node.op.clone(), node.name.clone(), &args, node.outputs.clone());
        for k in 0..node.outputs.len() {
            let v = Value::new(n, k);
            mapped.insert(v, Value::new(id, k));
            if is_output(v, &inside) {
                sub.add_output(value_name(graph, v), Value::new(id, k));
                outputs.push(v);
            }
        }
    }
    (sub, inputs, outputs)
}

impl Backend for Hetero {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, kernel: &Kernel) -> bool {
        self.devices.iter().any(|d| d.supports(kernel))
    }

    fn compile(&self, program: &Program, options: &CompileOptions) -> Result<Executable> {
        let graph = &program.graph;
        let parts = self.partition(graph)?;
        let mut slots = Slots::default();
        let graph_inputs: Vec<usize> = graph.inputs.iter().map(|&n| slots.of(Value::new(n, 0))).collect();
        let graph_outputs: Vec<Value> = graph.outputs.iter().map(|(_, v)| *v).collect();
        // A value leaves its subgraph when a node of another subgraph or the graph's outputs
        // read it.
        let is_output = |v: Value, inside: &HashSet<NodeId>| {
            graph_outputs.contains(&v) || graph.uses_of(v).iter().any(|(c, _)| !inside.contains(c))
        };

        let mut stages = Vec::new();
        let mut plan = Vec::new();
        for (d, nodes) in &parts {
            let (sub, ins, outs) = subgraph(graph, nodes, &is_output);
            if outs.is_empty() {
                // Nothing reads what these kernels compute.
                continue;
            }
            let device = &self.devices[*d];
            let sub = Program::new(sub);
            let executable = device.compile(&sub, options)?;
            match executable.plan() {
                Some(p) => plan.extend_from_slice(p),
                None => plan.extend(PlannedKernel::per_node(&sub.graph, device.name())),
            }
            let inputs = ins.iter().map(|&v| slots.of(v)).collect();
            let outputs = outs.iter().map(|&v| slots.of(v)).collect();
            stages.push(Stage { executable, inputs, outputs, last_reads: Vec::new() });
        }
        // Graph outputs that no kernel computes: inputs passed through, or constants.
        let mut constants: Vec<(usize, Tensor)> = Vec::new();
        for &v in &graph_outputs {
            if let Some(t) = graph.const_value(v) {
                constants.push((slots.of(v), t.clone()));
            }
        }
        let output_slots: Vec<usize> = graph_outputs.iter().map(|&v| slots.of(v)).collect();
        let mut last_stage: HashMap<usize, usize> = HashMap::new();
        for (i, s) in stages.iter().enumerate() {
            for &slot in &s.inputs {
                last_stage.insert(slot, i);
            }
        }
        for (slot, i) in last_stage {
            if !output_slots.contains(&slot) {
                stages[i].last_reads.push(slot);
            }
        }

        let run = Run { device: self.name.clone(), n_slots: slots.0.len(), graph_inputs, constants, stages, outputs: output_slots };
        Ok(Executable::new(move |inputs, profile| run.run(inputs, profile)).with_plan(plan))
    }
}

struct Run {
    device: String,
    n_slots: usize,
    graph_inputs: Vec<usize>,
    constants: Vec<(usize, Tensor)>,
    stages: Vec<Stage>,
    outputs: Vec<usize>,
}

impl Run {
    fn run(&self, inputs: &[Tensor], mut profile: Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>> {
        if inputs.len() != self.graph_inputs.len() {
            return Err(BackendError::new(&self.device, format!("the program takes {} inputs, {} were given", self.graph_inputs.len(), inputs.len())));
        }
        let mut table: Vec<Option<Tensor>> = vec![None; self.n_slots];
        for (&slot, t) in self.graph_inputs.iter().zip(inputs) {
            table[slot] = Some(t.clone());
        }
        for (slot, t) in &self.constants {
            table[*slot] = Some(t.clone());
        }
        let missing = |slot: usize| BackendError::new(&self.device, format!("value {slot} was read before it was computed"));
        for stage in &self.stages {
            let ins = stage.inputs.iter().map(|&s| table[s].clone().ok_or_else(|| missing(s))).collect::<Result<Vec<_>>>()?;
            let outs = stage.executable.run(&ins, profile.as_mut().map(|p| &mut **p))?;
            if outs.len() != stage.outputs.len() {
                return Err(BackendError::new(&self.device, format!("a subgraph returned {} outputs, {} were expected", outs.len(), stage.outputs.len())));
            }
            for (&slot, t) in stage.outputs.iter().zip(outs) {
                table[slot] = Some(t);
            }
            for &slot in &stage.last_reads {
                table[slot] = None;
            }
        }
        self.outputs.iter().map(|&s| table[s].clone().ok_or_else(|| missing(s))).collect()
    }
}
