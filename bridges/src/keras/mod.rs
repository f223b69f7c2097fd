//! The Keras bridge: Keras 3 `.keras` archives (`config.json` + `model.weights.h5` in a zip)
//! and legacy `.h5` files (`model_config` attribute + `model_weights` group) into a
//! `kiln_ir::Graph`, read natively (no TensorFlow).
//!
//! - `weights`: where each layer's variables live in the two HDF5 layouts.
//! - `model`: Sequential and Functional configs: inputs, layer calls, outputs.
//! - `layers`: the one table from Keras layer classes to IR ops.
//!
//! Keras is channels-last; NHWC ops are wrapped in transposes to the IR's NCHW and back.
//! The files are untrusted: every failure is a `BridgeError` naming the file and the layer.

mod layers;
mod model;
mod weights;

use crate::error::BridgeError;
use kiln_ir::{Graph, Tensor};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// An error about one layer (or the model as a whole when `layer` is `None`).
pub(crate) struct KErr {
    pub layer: Option<String>,
    pub message: String,
}

impl KErr {
    pub fn msg(message: impl Into<String>) -> KErr {
        KErr {
            layer: None,
            message: message.into(),
        }
    }
    pub fn at(layer: &str, message: impl Into<String>) -> KErr {
        KErr {
            layer: Some(layer.to_string()),
            message: message.into(),
        }
    }
}

pub(crate) type KResult<T> = std::result::Result<T, KErr>;

/// The archives we read hold a config of a few MB at most; refuse anything absurd before
/// allocating it.
const MAX_CONFIG_BYTES: u64 = 256 << 20;
const MAX_WEIGHTS_BYTES: u64 = 8 << 30;

/// Loads a `.keras` archive or a legacy `.h5` Keras model, telling them apart by content.
pub fn load(path: &Path) -> Result<Graph, BridgeError> {
    let label = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| BridgeError::new(&label, None, format!("cannot read the file: {e}")))?;
    load_bytes(bytes, &label)
}

/// Loads a model from its bytes; `label` names it in messages.
pub fn load_bytes(bytes: Vec<u8>, label: &str) -> Result<Graph, BridgeError> {
    let to_bridge = |e: KErr| BridgeError::new(label, e.layer, e.message);
    let (config, store) = if bytes.starts_with(b"PK") {
        read_archive(&bytes).map_err(to_bridge)?
    } else if hdf5_pure::is_hdf5_bytes(&bytes) {
        read_legacy_h5(bytes).map_err(to_bridge)?
    } else {
        return Err(BridgeError::new(
            label,
            None,
            "not a Keras model: neither a .keras zip archive nor an HDF5 file",
        ));
    };
    model::build(&config, &store).map_err(to_bridge)
}

/// Loads a model from its config (the JSON of `keras.saving.serialize_keras_object(model)`,
/// which is what a `.keras` archive's `config.json` holds) and each layer's variables in
/// `layer.weights` order, by layer name: a live Keras model handed over in memory.
pub fn load_config(
    config_json: &str,
    weights: HashMap<String, Vec<Tensor>>,
    label: &str,
) -> Result<Graph, BridgeError> {
    let config: Json = serde_json::from_str(config_json).map_err(|e| {
        BridgeError::new(
            label,
            None,
            format!("the model config is not valid JSON: {e}"),
        )
    })?;
    model::build(&config, &weights::Store::Map(weights))
        .map_err(|e| BridgeError::new(label, e.layer, e.message))
}

fn read_archive(bytes: &[u8]) -> KResult<(Json, weights::Store)> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| KErr::msg(format!("not a valid .keras archive (zip: {e})")))?;
    let config = read_member(&mut zip, "config.json", MAX_CONFIG_BYTES, bytes.len() as u64)?
        .ok_or_else(|| KErr::msg("the .keras archive has no config.json"))?;
    let config: Json = serde_json::from_slice(&config)
        .map_err(|e| KErr::msg(format!("config.json is not valid JSON: {e}")))?;
    let weights = read_member(&mut zip, "model.weights.h5", MAX_WEIGHTS_BYTES, bytes.len() as u64)?;
    let store = match weights {
        Some(w) => {
            check_h5_len(&w, "model.weights.h5 in the archive")?;
            let file = hdf5_pure::File::from_bytes(w).map_err(|e| {
                KErr::msg(format!(
                    "model.weights.h5 in the archive is not a valid HDF5 file: {e}"
                ))
            })?;
            weights::Store::keras3(file)?
        }
        None => weights::Store::Missing("the .keras archive has no model.weights.h5".into()),
    };
    Ok((config, store))
}

fn read_member(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
    limit: u64,
    archive_len: u64,
) -> KResult<Option<Vec<u8>>> {
    let mut f = match zip.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => {
            return Err(KErr::msg(format!(
                "cannot read {name} from the archive: {e}"
            )))
        }
    };
    if f.size() > limit {
        return Err(KErr::msg(format!(
            "{name} in the archive is too large ({} bytes)",
            f.size()
        )));
    }
    // Deflate cannot inflate by more than 1032:1, so a member declaring more than that
    // (a zip bomb's lie) is refused before anything is allocated for it.
    let most = f.compressed_size().min(archive_len).saturating_mul(1032).saturating_add(1024);
    if f.size() > most {
        return Err(KErr::msg(format!(
            "{name} in the archive declares {} bytes, more than its {} compressed bytes can hold",
            f.size(),
            f.compressed_size()
        )));
    }
    let size = f.size();
    let mut out = Vec::with_capacity(size as usize);
    f.by_ref()
        .take(size)
        .read_to_end(&mut out)
        .map_err(|e| KErr::msg(format!("cannot read {name} from the archive: {e}")))?;
    Ok(Some(out))
}

/// The end-of-file address an HDF5 superblock at offset 0 declares (8-byte offsets only),
/// so that a truncated file is named as such rather than by whichever read fails first.
fn h5_declared_len(bytes: &[u8]) -> Option<u64> {
    let at = match (bytes.get(8)?, bytes.get(13)?, bytes.get(9)?) {
        (0, 8, _) => 40,
        (1, 8, _) => 44,
        (2 | 3, _, 8) => 28,
        _ => return None,
    };
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn check_h5_len(bytes: &[u8], what: &str) -> KResult<()> {
    match h5_declared_len(bytes) {
        Some(n) if n != u64::MAX && n > bytes.len() as u64 => Err(KErr::msg(format!(
            "{what} is truncated: its superblock says {n} bytes, it has {}",
            bytes.len()
        ))),
        _ => Ok(()),
    }
}

fn read_legacy_h5(bytes: Vec<u8>) -> KResult<(Json, weights::Store)> {
    check_h5_len(&bytes, "the HDF5 file")?;
    let file = hdf5_pure::File::from_bytes(bytes)
        .map_err(|e| KErr::msg(format!("not a valid HDF5 file: {e}")))?;
    let attrs = file
        .root()
        .attrs()
        .map_err(|e| KErr::msg(format!("cannot read the root attributes: {e}")))?;
    let text = attrs
        .get("model_config")
        .and_then(|a| a.as_str().map(|s| s.to_string()))
        .ok_or_else(|| {
            KErr::msg("the HDF5 file has no `model_config` attribute (a weights-only file is not a model)")
        })?;
    let config: Json = serde_json::from_str(&text).map_err(|e| {
        KErr::msg(format!(
            "the `model_config` attribute is not valid JSON: {e}"
        ))
    })?;
    Ok((config, weights::Store::legacy(file)))
}
