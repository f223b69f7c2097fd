//! Where a layer's variables live. Both layouts give them in the order of Keras's
//! `layer.weights` (kernel, bias; gamma, beta, moving mean, moving variance; ...):
//!
//! - Keras 3 (`model.weights.h5` in a `.keras` archive): `layers/<path>/vars/0..n`, where
//!   `<path>` is derived from the class name, not the layer name; each `vars` group carries
//!   the layer's name as its `name` attribute, which is how layers are found here. Nested
//!   models keep their layers under `layers/<path>/layers/...`; sublayers (an RNN's cell,
//!   attention's projections) are groups named after the Python attribute.
//! - Legacy `.h5`: `model_weights/<layer name>` lists its datasets in the `weight_names`
//!   attribute.

use super::{KErr, KResult};
use hdf5_pure::{DType as HType, File};
use kiln_ir::Tensor;
use std::collections::HashMap;

pub(crate) enum Store {
    Keras3 {
        file: File,
        paths: HashMap<String, String>,
    },
    Legacy {
        file: File,
    },
    /// Weights handed over in memory (a live Keras model's `layer.weights`), by layer name.
    Map(HashMap<String, Vec<Tensor>>),
    /// No weights file: any layer that needs weights fails with this message.
    Missing(String),
}

/// Nesting deeper than this is refused (a cyclic or hostile file).
const MAX_DEPTH: usize = 32;

impl Store {
    pub fn keras3(file: File) -> KResult<Store> {
        let mut paths = HashMap::new();
        collect_paths(&file, "", 0, &mut paths)?;
        Ok(Store::Keras3 { file, paths })
    }

    pub fn legacy(file: File) -> Store {
        Store::Legacy { file }
    }

    /// The weights of layer `name` of class `class`, in `layer.weights` order; `wrapper` is
    /// the sub-group of a wrapped layer (Keras 3 only: legacy files list them flat).
    pub fn layer_weights(
        &self,
        name: &str,
        class: &str,
        wrapper: Option<&str>,
    ) -> KResult<Vec<Tensor>> {
        match self {
            Store::Missing(m) => Err(KErr::at(name, m.clone())),
            // `layer.weights` of a wrapper already lists its wrapped layer's variables.
            Store::Map(map) => map
                .get(name)
                .cloned()
                .ok_or_else(|| KErr::at(name, "no weights were given for this layer")),
            Store::Keras3 { file, paths } => {
                let Some(base) = paths.get(name) else {
                    return Err(KErr::at(
                        name,
                        "the weights file has no variables for this layer",
                    ));
                };
                let subs: &[&str] = match class {
                    "LSTM" | "GRU" | "SimpleRNN" => &["cell"],
                    "Bidirectional" => &["forward_layer/cell", "backward_layer/cell"],
                    "MultiHeadAttention" => {
                        &["query_dense", "key_dense", "value_dense", "output_dense"]
                    }
                    "TimeDistributed" => &["layer"],
                    _ => &[""],
                };
                let mut out = Vec::new();
                for sub in subs {
                    let base = match wrapper {
                        Some(w) => format!("{base}/{w}"),
                        None => base.clone(),
                    };
                    let group = if sub.is_empty() {
                        format!("{base}/vars")
                    } else {
                        format!("{base}/{sub}/vars")
                    };
                    read_vars(file, &group, name, &mut out)?;
                }
                Ok(out)
            }
            Store::Legacy { file } => {
                let group_path = format!("model_weights/{name}");
                if file.group(&group_path).is_ok() {
                    let names = weight_names(file, &group_path, name)?;
                    let mut out = Vec::with_capacity(names.len());
                    for w in names {
                        out.push(read_dataset(file, &format!("{group_path}/{w}"), name)?);
                    }
                    return Ok(out);
                }
                // A layer of a nested model: its weights sit in the group of the outermost
                // model layer that holds it, named `<layer>/<variable>`.
                let top = file
                    .group("model_weights")
                    .map_err(|_| KErr::at(name, "the HDF5 file has no `model_weights` group"))?;
                let groups = top
                    .groups()
                    .map_err(|e| KErr::at(name, format!("cannot list `model_weights`: {e}")))?;
                let prefix = format!("{name}/");
                for g in groups {
                    let gp = format!("model_weights/{g}");
                    let names = weight_names(file, &gp, name)?;
                    if names.iter().any(|w| w.starts_with(&prefix)) {
                        let mut out = Vec::new();
                        for w in names.iter().filter(|w| w.starts_with(&prefix)) {
                            out.push(read_dataset(file, &format!("{gp}/{w}"), name)?);
                        }
                        return Ok(out);
                    }
                }
                Err(KErr::at(
                    name,
                    format!("the weights file has no group `{group_path}`"),
                ))
            }
        }
    }
}

fn weight_names(file: &File, group_path: &str, layer: &str) -> KResult<Vec<String>> {
    let group = file.group(group_path).map_err(|_| {
        KErr::at(
            layer,
            format!("the weights file has no group `{group_path}`"),
        )
    })?;
    let attrs = group.attrs().map_err(|e| {
        KErr::at(
            layer,
            format!("cannot read the attributes of `{group_path}`: {e}"),
        )
    })?;
    Ok(match attrs.get("weight_names") {
        None => Vec::new(),
        Some(a) => a
            .as_strings()
            .map(|s| s.to_vec())
            .or_else(|| a.as_str().map(|s| vec![s.to_string()]))
            .unwrap_or_default(),
    })
}

fn collect_paths(
    file: &File,
    prefix: &str,
    depth: usize,
    out: &mut HashMap<String, String>,
) -> KResult<()> {
    if depth > MAX_DEPTH {
        return Err(KErr::msg("the weights file nests models too deeply"));
    }
    let layers_path = format!("{prefix}layers");
    let Ok(layers) = file.group(&layers_path) else {
        return Ok(());
    };
    let children = layers.groups().map_err(|e| {
        KErr::msg(format!(
            "cannot list `{layers_path}` in the weights file: {e}"
        ))
    })?;
    for child in children {
        let path = format!("{layers_path}/{child}");
        if let Ok(vars) = file.group(&format!("{path}/vars")) {
            if let Ok(attrs) = vars.attrs() {
                if let Some(name) = attrs.get("name").and_then(|a| a.as_str()) {
                    out.entry(name.to_string()).or_insert_with(|| path.clone());
                }
            }
        }
        collect_paths(file, &format!("{path}/"), depth + 1, out)?;
    }
    Ok(())
}

fn read_vars(file: &File, group: &str, layer: &str, out: &mut Vec<Tensor>) -> KResult<()> {
    let Ok(g) = file.group(group) else {
        return Ok(());
    };
    let mut names = g.datasets().map_err(|e| {
        KErr::at(
            layer,
            format!("cannot list `{group}` in the weights file: {e}"),
        )
    })?;
    // vars are named 0, 1, 2, ... and must be taken in numeric order.
    let mut indexed = Vec::with_capacity(names.len());
    for n in names.drain(..) {
        let i: usize = n.parse().map_err(|_| {
            KErr::at(
                layer,
                format!("unexpected variable `{group}/{n}` in the weights file"),
            )
        })?;
        indexed.push((i, n));
    }
    indexed.sort();
    for (k, (i, n)) in indexed.iter().enumerate() {
        if *i != k {
            return Err(KErr::at(
                layer,
                format!("variable {k} is missing from `{group}` in the weights file"),
            ));
        }
        out.push(read_dataset(file, &format!("{group}/{n}"), layer)?);
    }
    Ok(())
}

fn read_dataset(file: &File, path: &str, layer: &str) -> KResult<Tensor> {
    let err = |m: String| KErr::at(layer, format!("weight `{path}`: {m}"));
    let ds = file
        .dataset(path)
        .map_err(|e| err(format!("cannot open it: {e}")))?;
    let shape = ds
        .shape()
        .map_err(|e| err(format!("cannot read its shape: {e}")))?;
    let mut dims = Vec::with_capacity(shape.len());
    for d in shape {
        dims.push(usize::try_from(d).map_err(|_| err(format!("dimension {d} is too large")))?);
    }
    let n = kiln_ir::tensor::checked_numel(&dims).map_err(|e| err(e.message))?;
    match ds
        .dtype()
        .map_err(|e| err(format!("cannot read its type: {e}")))?
    {
        HType::F32
        | HType::F64
        | HType::I8
        | HType::I16
        | HType::I32
        | HType::I64
        | HType::U8
        | HType::U16
        | HType::U32
        | HType::U64 => {}
        other => {
            return Err(err(format!(
                "has type {other:?}; only numeric weights are supported"
            )))
        }
    }
    let data = ds
        .read_f32()
        .map_err(|e| err(format!("cannot read its data: {e}")))?;
    if data.len() != n {
        return Err(err(format!(
            "holds {} values for shape {dims:?}",
            data.len()
        )));
    }
    Tensor::new(dims, data).map_err(|e| err(e.message))
}
