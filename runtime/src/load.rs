//! Load-time options: which SavedModel signature to read, and input shapes that fix
//! unknown or symbolic dims (as OpenVINO's model optimizer's `--input_shape` does).

use crate::{load_format, Error, Format, Model, Result};
use kiln_ir::{Dim, Shape, TensorType};
use std::path::Path;

/// How to load a model. The default loads it as the file says.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The SavedModel signature to read (default `serving_default`, then `serve`). Other
    /// formats have one graph and refuse the option.
    pub signature: Option<String>,
    /// (input name, shape) pairs applied after loading; see [`Model::set_input_shapes`].
    pub input_shapes: Vec<(String, Vec<usize>)>,
}

/// Loads a model with `options`, detecting its format, and verifies its graph.
pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model> {
    let path = path.as_ref();
    let format = Format::detect(path)?;
    if options.signature.is_some() && format != Format::TfSavedModel {
        return Err(Error::Load(format!(
            "{}: only a TensorFlow SavedModel has signatures to choose from",
            path.display()
        )));
    }
    let mut model = load_format(path, format, options.signature.as_deref())?;
    if !options.input_shapes.is_empty() {
        model.set_input_shapes(&options.input_shapes)?;
    }
    Ok(model)
}

impl Model {
    /// Fixes the shapes of the named inputs, then re-infers the type of every node. Each
    /// shape must have the input's rank and agree with its known dims; it fills in the
    /// symbolic and unknown ones. Nested graphs (loop bodies) keep their types.
    pub fn set_input_shapes(&mut self, shapes: &[(String, Vec<usize>)]) -> Result<()> {
        for (name, dims) in shapes {
            let node = self
                .graph
                .inputs
                .iter()
                .copied()
                .find(|&n| &self.graph.node(n).name == name)
                .ok_or_else(|| {
                    let names: Vec<String> = self
                        .inputs()
                        .iter()
                        .map(|(n, _)| format!("`{n}`"))
                        .collect();
                    Error::Input(format!(
                        "the model has no input `{name}`; its inputs are {}",
                        names.join(", ")
                    ))
                })?;
            let old = self.graph.node(node).outputs[0].clone();
            if let Some(have) = old.shape.dims() {
                let fits = have.len() == dims.len()
                    && have
                        .iter()
                        .zip(dims)
                        .all(|(d, &s)| d.known().map_or(true, |k| k == s));
                if !fits {
                    let given: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
                    return Err(Error::Input(format!(
                        "input `{name}` has shape {}; the shape [{}] does not fit it",
                        old.shape,
                        given.join(",")
                    )));
                }
            }
            let shape = Shape(Some(dims.iter().map(|&d| Dim::Known(d)).collect()));
            self.graph.nodes[node].outputs[0] = TensorType {
                dtype: old.dtype,
                shape,
            };
        }
        let file = self.path.display().to_string();
        kiln_ir::infer::reinfer(&mut self.graph).map_err(|error| Error::Invalid {
            file: file.clone(),
            error,
        })?;
        kiln_ir::verify(&self.graph).map_err(|error| Error::Invalid { file, error })
    }
}

/// Parses `NAME=1,224,224,3` (the CLI's `--input-shape`). The name may itself hold `=`
/// or `:` (TensorFlow tensor names); the shape is what follows the last `=`.
pub fn parse_input_shape(spec: &str) -> Result<(String, Vec<usize>)> {
    let bad = |why: &str| {
        Error::Input(format!(
            "--input-shape `{spec}`: {why}; expected NAME=D1,D2,… such as x=1,224,224,3"
        ))
    };
    let (name, dims) = spec.rsplit_once('=').ok_or_else(|| bad("no `=`"))?;
    if name.is_empty() {
        return Err(bad("no input name"));
    }
    let dims = dims.trim().trim_start_matches('[').trim_end_matches(']');
    let dims = if dims.is_empty() {
        vec![]
    } else {
        dims.split(',')
            .map(|d| {
                d.trim()
                    .parse::<usize>()
                    .map_err(|_| bad(&format!("`{d}` is not a dim size")))
            })
            .collect::<Result<Vec<_>>>()?
    };
    Ok((name.to_string(), dims))
}
