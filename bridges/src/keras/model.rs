//! Model configs: Functional (a DAG of layer calls, shared layers and nested models
//! included) and Sequential (a chain), lowered call by call into one graph.

use super::layers;
use super::weights::Store;
use super::{KErr, KResult};
use kiln_ir::{DType, Dim, Graph, Op, Shape, Tensor, TensorType, Value};
use serde_json::Value as Json;
use std::collections::HashMap;

/// Nested models deeper than this are refused.
const MAX_NESTING: usize = 32;

pub(crate) struct Ctx<'s> {
    pub g: Graph,
    pub store: &'s Store,
    /// Makes the names of helper nodes unique.
    counter: usize,
    /// Set while lowering the layer a wrapper (TimeDistributed) holds: its variables sit
    /// under this sub-group of the wrapper's.
    pub wrapper: Option<&'static str>,
}

impl<'s> Ctx<'s> {
    /// Adds a single-output node, naming it after the layer.
    pub fn add(&mut self, layer: &str, op: Op, inputs: &[Value]) -> KResult<Value> {
        self.counter += 1;
        let name = format!("{layer}/{}_{}", op.name(), self.counter);
        self.g
            .add1(op, name, inputs)
            .map_err(|e| KErr::at(layer, e.message))
    }

    /// Adds a node with several (possibly absent) inputs and `n` outputs.
    pub fn add_n(
        &mut self,
        layer: &str,
        op: Op,
        inputs: &[Option<Value>],
        n: usize,
    ) -> KResult<Vec<Value>> {
        self.counter += 1;
        let name = format!("{layer}/{}_{}", op.name(), self.counter);
        let node = self
            .g
            .add(op, name, inputs, n)
            .map_err(|e| KErr::at(layer, e.message))?;
        Ok((0..n).map(|i| Value::new(node, i)).collect())
    }

    pub fn constant(&mut self, layer: &str, t: Tensor) -> Value {
        self.counter += 1;
        self.g
            .add_const(format!("{layer}/const_{}", self.counter), t)
    }

    pub fn const_i64(&mut self, layer: &str, v: &[i64]) -> KResult<Value> {
        let t = Tensor::new(vec![v.len()], v.to_vec()).map_err(|e| KErr::at(layer, e.message))?;
        Ok(self.constant(layer, t))
    }

    pub fn const_f32(&mut self, layer: &str, shape: Vec<usize>, v: Vec<f32>) -> KResult<Value> {
        let t = Tensor::new(shape, v).map_err(|e| KErr::at(layer, e.message))?;
        Ok(self.constant(layer, t))
    }

    /// The weights of layer `name`, of class `class`, in `layer.weights` order.
    pub fn layer_weights(&self, name: &str, class: &str) -> KResult<Vec<Tensor>> {
        self.store.layer_weights(name, class, self.wrapper)
    }

    pub fn ty(&self, v: Value) -> &TensorType {
        self.g.value_type(v)
    }

    pub fn rank(&self, layer: &str, v: Value) -> KResult<usize> {
        self.ty(v)
            .shape
            .rank()
            .ok_or_else(|| KErr::at(layer, "the input's rank is unknown"))
    }
}

pub(crate) fn build(config: &Json, store: &Store) -> KResult<Graph> {
    let class = str_of(config, "class_name")
        .ok_or_else(|| KErr::msg("the model config has no `class_name`"))?;
    let cfg = config
        .get("config")
        .ok_or_else(|| KErr::msg("the model config has no `config`"))?;
    let name = str_of(cfg, "name").unwrap_or("model").to_string();
    let mut ctx = Ctx {
        g: Graph::new(name.clone()),
        store,
        counter: 0,
        wrapper: None,
    };
    let outputs = match class {
        "Functional" | "Model" => functional(&mut ctx, cfg, None, 0)?,
        "Sequential" => sequential(&mut ctx, cfg, None, 0)?,
        other => {
            return Err(KErr::msg(format!(
                "the top-level object is a `{other}`, not a Sequential or Functional model"
            )))
        }
    };
    let mut used: HashMap<String, usize> = HashMap::new();
    for (out_name, v) in outputs {
        let k = used.entry(out_name.clone()).or_insert(0);
        let n = if *k == 0 {
            out_name.clone()
        } else {
            format!("{out_name}_{k}")
        };
        *k += 1;
        ctx.g.add_output(n, v);
    }
    Ok(ctx.g)
}

pub(crate) fn str_of<'a>(j: &'a Json, key: &str) -> Option<&'a str> {
    j.get(key).and_then(|v| v.as_str())
}

/// A graph input from an InputLayer config (`batch_shape`, or the older
/// `batch_input_shape`); the batch dim becomes `N`.
fn graph_input(ctx: &mut Ctx, name: &str, cfg: &Json) -> KResult<Value> {
    let shape = cfg
        .get("batch_shape")
        .or_else(|| cfg.get("batch_input_shape"))
        .and_then(|s| s.as_array())
        .ok_or_else(|| KErr::at(name, "the input layer has no `batch_shape`"))?;
    let mut dims = Vec::with_capacity(shape.len());
    for (i, d) in shape.iter().enumerate() {
        dims.push(match d.as_u64() {
            Some(k) if i > 0 => Dim::Known(
                usize::try_from(k).map_err(|_| KErr::at(name, "input dimension too large"))?,
            ),
            _ if i == 0 => Dim::Sym("N".into()),
            _ if d.is_null() => Dim::Unknown,
            _ => return Err(KErr::at(name, format!("input dimension {d} is not a size"))),
        });
    }
    let dtype = dtype_of(cfg).map_err(|m| KErr::at(name, m))?;
    Ok(ctx.g.add_input(
        name,
        TensorType {
            dtype,
            shape: Shape(Some(dims)),
        },
    ))
}

pub(crate) fn dtype_of(cfg: &Json) -> Result<DType, String> {
    let d = match cfg.get("dtype") {
        None | Some(Json::Null) => return Ok(DType::F32),
        Some(Json::String(s)) => s.as_str(),
        // A DTypePolicy object.
        Some(o) => o
            .get("config")
            .and_then(|c| str_of(c, "name"))
            .unwrap_or("float32"),
    };
    Ok(match d {
        "float32" => DType::F32,
        "float64" => DType::F64,
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "int32" => DType::I32,
        "int64" => DType::I64,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "int16" => DType::I16,
        "bool" => DType::Bool,
        other => return Err(format!("dtype `{other}` is not supported")),
    })
}

/// `(layer, node index, tensor index)` from a Keras-3 `__keras_tensor__` or a Keras-2
/// `[layer, node, tensor, kwargs]` entry.
fn history(j: &Json) -> Option<(String, usize, usize)> {
    let h = if let Some(cfg) = j
        .get("config")
        .filter(|_| str_of(j, "class_name") == Some("__keras_tensor__"))
    {
        cfg.get("keras_history")?.as_array()?
    } else {
        j.as_array()?
    };
    let name = h.first()?.as_str()?.to_string();
    let node = usize::try_from(h.get(1)?.as_u64()?).ok()?;
    let tensor = usize::try_from(h.get(2)?.as_u64()?).ok()?;
    Some((name, node, tensor))
}

fn collect_tensors(j: &Json, out: &mut Vec<(String, usize, usize)>, depth: usize) {
    if depth > 8 {
        return;
    }
    if str_of(j, "class_name") == Some("__keras_tensor__") {
        if let Some(h) = history(j) {
            out.push(h);
        }
    } else if let Some(a) = j.as_array() {
        for x in a {
            collect_tensors(x, out, depth + 1);
        }
    }
}

/// One call of a layer: its input tensors and keyword arguments.
struct Call {
    inputs: Vec<(String, usize, usize)>,
    /// Numbers passed positionally beside the tensors (Keras 3 writes `x + 3.0` as an `Add`
    /// called with `[x, 3.0]`): (position among the inputs, value).
    scalars: Vec<(usize, f64)>,
    kwargs: Json,
}

fn calls_of(layer: &Json) -> Vec<Call> {
    let mut calls = Vec::new();
    let Some(nodes) = layer.get("inbound_nodes").and_then(|n| n.as_array()) else {
        return calls;
    };
    for node in nodes {
        let mut inputs = Vec::new();
        let mut scalars = Vec::new();
        let mut kwargs = Json::Null;
        if let Some(args) = node.get("args") {
            // Keras 3: {args, kwargs}; tensors passed by keyword (attention's key/value)
            // follow the positional ones.
            match args.as_array() {
                Some(list) => {
                    for a in list {
                        match a.as_f64() {
                            Some(v) => scalars.push((inputs.len(), v)),
                            None => collect_tensors(a, &mut inputs, 1),
                        }
                    }
                }
                None => collect_tensors(args, &mut inputs, 0),
            }
            if let Some(kw) = node.get("kwargs") {
                for key in ["query", "value", "key"] {
                    if let Some(t) = kw.get(key) {
                        collect_tensors(t, &mut inputs, 0);
                    }
                }
                kwargs = kw.clone();
            }
        } else if let Some(list) = node.as_array() {
            // Keras 2: a list of [layer, node, tensor, kwargs].
            for entry in list {
                if let Some(h) = history(entry) {
                    inputs.push(h);
                }
                if let Some(kw) = entry.as_array().and_then(|e| e.get(3)) {
                    kwargs = kw.clone();
                }
            }
        }
        calls.push(Call { inputs, scalars, kwargs });
    }
    calls
}

fn io_list(j: Option<&Json>) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let Some(j) = j else { return out };
    if let Some(h) = history(j) {
        out.push(h);
    } else if let Some(a) = j.as_array() {
        for x in a {
            if let Some(h) = history(x) {
                out.push(h);
            }
        }
    }
    out
}

/// Lowers a Functional config. With `given` inputs (a nested model), its input layers
/// take those values; otherwise they become graph inputs. Returns (name, value) outputs.
fn functional(
    ctx: &mut Ctx,
    cfg: &Json,
    given: Option<&[Value]>,
    depth: usize,
) -> KResult<Vec<(String, Value)>> {
    if depth > MAX_NESTING {
        return Err(KErr::msg("models are nested too deeply"));
    }
    let layers = cfg
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| KErr::msg("the Functional config has no `layers` list"))?;
    let input_names = io_list(cfg.get("input_layers"));
    let output_refs = io_list(cfg.get("output_layers"));
    let mut produced: HashMap<(String, usize), Vec<Value>> = HashMap::new();

    // Input layers first, in the model's input order.
    for (i, (name, _, _)) in input_names.iter().enumerate() {
        let layer = layers
            .iter()
            .find(|l| str_of(l, "name") == Some(name.as_str()))
            .ok_or_else(|| KErr::at(name, "the model's input layer is not among its layers"))?;
        let lcfg = layer.get("config").unwrap_or(&Json::Null);
        let v = match given {
            Some(vals) => *vals
                .get(i)
                .ok_or_else(|| KErr::at(name, "the nested model is called with too few inputs"))?,
            None => graph_input(ctx, name, lcfg)?,
        };
        produced.insert((name.clone(), 0), vec![v]);
    }

    // Every other layer call, in dependency order (the config lists layers topologically,
    // but a shared layer's later calls can depend on layers listed after it).
    struct Pending<'j> {
        layer: &'j Json,
        name: String,
        node: usize,
        call: Call,
    }
    let mut pending = Vec::new();
    for layer in layers {
        let name = str_of(layer, "name")
            .or_else(|| layer.get("config").and_then(|c| str_of(c, "name")))
            .ok_or_else(|| KErr::msg("a layer in the config has no name"))?
            .to_string();
        if str_of(layer, "class_name") == Some("InputLayer") {
            if !produced.contains_key(&(name.clone(), 0)) {
                return Err(KErr::at(
                    &name,
                    "an input layer that is not among the model's inputs",
                ));
            }
            continue;
        }
        for (node, call) in calls_of(layer).into_iter().enumerate() {
            pending.push(Pending {
                layer,
                name: name.clone(),
                node,
                call,
            });
        }
    }
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for p in pending {
            let ready = p
                .call
                .inputs
                .iter()
                .all(|(l, n, _)| produced.contains_key(&(l.clone(), *n)));
            if !ready {
                rest.push(p);
                continue;
            }
            let mut ins = Vec::with_capacity(p.call.inputs.len());
            for (l, n, t) in &p.call.inputs {
                let outs = &produced[&(l.clone(), *n)];
                ins.push(*outs.get(*t).ok_or_else(|| {
                    KErr::at(
                        &p.name,
                        format!("reads output {t} of layer `{l}`, which has {}", outs.len()),
                    )
                })?);
            }
            if !p.call.scalars.is_empty() {
                let class = str_of(p.layer, "class_name").unwrap_or("");
                if !matches!(class, "Add" | "Subtract" | "Multiply" | "Maximum" | "Minimum" | "Average") {
                    return Err(KErr::at(&p.name, format!("{class} called with a number among its inputs is not supported")));
                }
                let first = *ins.first().ok_or_else(|| KErr::at(&p.name, "called with numbers only"))?;
                let dt = ctx.ty(first).dtype;
                for &(pos, v) in &p.call.scalars {
                    let t = Tensor::from_f64(dt, vec![], &[v]).map_err(|e| KErr::at(&p.name, e.message))?;
                    let c = ctx.constant(&p.name, t);
                    ins.insert(pos.min(ins.len()), c);
                }
            }
            let outs = call_layer(ctx, p.layer, &p.name, ins, &p.call.kwargs, depth)?;
            produced.insert((p.name.clone(), p.node), outs);
        }
        if rest.len() == before {
            let p = &rest[0];
            return Err(KErr::at(
                &p.name,
                "its inputs are never produced (a missing layer or a cycle)",
            ));
        }
        pending = rest;
    }

    let mut outputs = Vec::with_capacity(output_refs.len());
    for (l, n, t) in output_refs {
        let outs = produced
            .get(&(l.clone(), n))
            .ok_or_else(|| KErr::at(&l, "the model's output layer is never called"))?;
        let v = *outs.get(t).ok_or_else(|| {
            KErr::at(
                &l,
                format!("the model reads its output {t}, which does not exist"),
            )
        })?;
        outputs.push((l, v));
    }
    if outputs.is_empty() {
        return Err(KErr::msg("the model has no outputs"));
    }
    Ok(outputs)
}

fn sequential(
    ctx: &mut Ctx,
    cfg: &Json,
    given: Option<&[Value]>,
    depth: usize,
) -> KResult<Vec<(String, Value)>> {
    if depth > MAX_NESTING {
        return Err(KErr::msg("models are nested too deeply"));
    }
    let layers = cfg
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| KErr::msg("the Sequential config has no `layers` list"))?;
    let model_name = str_of(cfg, "name").unwrap_or("sequential").to_string();
    let mut cur: Option<Value> = given.and_then(|g| g.first().copied());
    let mut last = model_name.clone();
    for layer in layers {
        let class = str_of(layer, "class_name").unwrap_or("");
        let lcfg = layer.get("config").unwrap_or(&Json::Null);
        let name = str_of(lcfg, "name")
            .or_else(|| str_of(layer, "name"))
            .unwrap_or("layer")
            .to_string();
        if class == "InputLayer" {
            if cur.is_none() {
                cur = Some(graph_input(ctx, &name, lcfg)?);
            }
            continue;
        }
        let x = match cur {
            Some(x) => x,
            None => {
                // The first layer declares the input shape itself.
                let shape = lcfg
                    .get("batch_input_shape")
                    .or_else(|| layer.get("build_config").and_then(|b| b.get("input_shape")))
                    .ok_or_else(|| KErr::msg("the Sequential model declares no input shape"))?;
                let mut icfg = serde_json::Map::new();
                icfg.insert("batch_shape".into(), shape.clone());
                icfg.insert(
                    "dtype".into(),
                    lcfg.get("dtype").cloned().unwrap_or(Json::Null),
                );
                graph_input(ctx, &format!("{model_name}_input"), &Json::Object(icfg))?
            }
        };
        let outs = call_layer(ctx, layer, &name, vec![x], &Json::Null, depth)?;
        cur = Some(
            *outs
                .first()
                .ok_or_else(|| KErr::at(&name, "the layer has no output"))?,
        );
        last = name;
    }
    let out = cur.ok_or_else(|| KErr::msg("the Sequential model has no layers"))?;
    Ok(vec![(last, out)])
}

fn call_layer(
    ctx: &mut Ctx,
    layer: &Json,
    name: &str,
    ins: Vec<Value>,
    kwargs: &Json,
    depth: usize,
) -> KResult<Vec<Value>> {
    let class = str_of(layer, "class_name")
        .ok_or_else(|| KErr::at(name, "the layer has no `class_name`"))?;
    let cfg = layer.get("config").unwrap_or(&Json::Null);
    match class {
        "Functional" | "Model" => Ok(functional(ctx, cfg, Some(&ins), depth + 1)?
            .into_iter()
            .map(|(_, v)| v)
            .collect()),
        "Sequential" => Ok(sequential(ctx, cfg, Some(&ins), depth + 1)?
            .into_iter()
            .map(|(_, v)| v)
            .collect()),
        _ => {
            if let Some(r) = layer.get("registered_name").and_then(|r| r.as_str()) {
                if !r.is_empty()
                    && r != class
                    && !layer
                        .get("module")
                        .and_then(|m| m.as_str())
                        .unwrap_or("keras")
                        .starts_with("keras")
                {
                    return Err(KErr::at(
                        name,
                        format!("custom object `{r}` (class {class}) is not supported"),
                    ));
                }
            }
            layers::lower(ctx, class, name, cfg, ins, kwargs)
        }
    }
}
