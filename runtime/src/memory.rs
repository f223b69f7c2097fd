//! Models held in memory rather than in files: serialized bytes whose format is named or
//! sniffed, and graphs a bridge built from a live framework object (the Python package's
//! Keras models and TensorFlow functions).

use crate::{Error, Format, LoadOptions, Model, Result};
use kiln_ir::Graph;
use std::path::PathBuf;

impl Format {
    /// The format named `name` (`onnx`, `kir`, `pb`/`tf`/`graphdef`, `keras`, `h5`), as a
    /// caller passes it along with bytes.
    pub fn from_name(name: &str) -> Result<Format> {
        Ok(match name.to_ascii_lowercase().trim_start_matches('.') {
            "onnx" => Format::Onnx,
            "kir" => Format::Kir,
            "pb" | "tf" | "graphdef" | "frozen" => Format::TfFrozen,
            "keras" => Format::Keras,
            "h5" | "hdf5" => Format::KerasH5,
            other => {
                return Err(Error::Load(format!(
                    "unknown model format `{other}`; expected onnx, kir, pb, keras or h5"
                )))
            }
        })
    }

    /// The format of serialized model bytes, from their first bytes. Protobuf writers emit
    /// fields in number order, so an ONNX `ModelProto` starts with `ir_version` (field 1,
    /// varint: 0x08) and a `GraphDef` with its nodes (field 1, length-delimited: 0x0a).
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        const HDF5: &[u8] = b"\x89HDF\r\n\x1a\n";
        if bytes.starts_with(b"PK") {
            Some(Format::Keras)
        } else if bytes.starts_with(HDF5) {
            Some(Format::KerasH5)
        } else if bytes.starts_with(b"graph") {
            Some(Format::Kir)
        } else {
            match bytes.first() {
                Some(0x08) => Some(Format::Onnx),
                Some(0x0a) => Some(Format::TfFrozen),
                _ => None,
            }
        }
    }
}

/// Loads a serialized model held in memory: an ONNX `ModelProto`, a frozen TensorFlow
/// `GraphDef`, a `.keras` archive or `.h5` file, or kiln's text IR with inline weights.
/// `format` names the format, else it is sniffed from the bytes; `label` names the model in
/// messages. Nothing outside the bytes is read (ONNX external data is refused).
pub fn load_bytes(
    bytes: Vec<u8>,
    format: Option<Format>,
    label: &str,
    options: &LoadOptions,
) -> Result<Model> {
    let format = match format {
        Some(f) => f,
        None => Format::sniff(&bytes).ok_or_else(|| {
            Error::Load(format!(
                "{label}: cannot tell the model format from its first bytes; name it (onnx, pb, keras, h5 or kir)"
            ))
        })?,
    };
    if options.signature.is_some() {
        return Err(Error::Load(format!(
            "{label}: only a TensorFlow SavedModel has signatures to choose from"
        )));
    }
    let load_err = |e: kiln_bridges::BridgeError| Error::Load(e.to_string());
    let graph = match format {
        Format::Onnx => kiln_bridges::onnx::load_bytes(&bytes, None, label).map_err(load_err)?,
        Format::TfFrozen => kiln_bridges::tensorflow::load_frozen_bytes(&bytes, label, &[], &[])
            .map_err(load_err)?,
        Format::Keras | Format::KerasH5 => {
            kiln_bridges::keras::load_bytes(bytes, label).map_err(load_err)?
        }
        Format::Kir => {
            let text = std::str::from_utf8(&bytes)
                .map_err(|e| Error::Load(format!("{label}: kiln IR text is not UTF-8: {e}")))?;
            kiln_ir::text::parse(text, None).map_err(|e| Error::Load(format!("{label}: {e}")))?
        }
        Format::TfSavedModel => return Err(Error::Load(format!(
            "{label}: a SavedModel is a directory (graph and variables files); load it by its path"
        ))),
    };
    let mut model = Model::from_graph(graph, label, format)?;
    if !options.input_shapes.is_empty() {
        model.set_input_shapes(&options.input_shapes)?;
    }
    Ok(model)
}

impl Model {
    /// A model from a graph a bridge built in memory, verified; `label` stands for the
    /// file name in messages.
    pub fn from_graph(graph: Graph, label: &str, format: Format) -> Result<Model> {
        kiln_ir::verify(&graph).map_err(|error| Error::Invalid {
            file: label.to_string(),
            error,
        })?;
        Ok(Model {
            graph,
            path: PathBuf::from(label),
            format,
        })
    }
}
