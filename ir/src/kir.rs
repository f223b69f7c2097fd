//! The saved form: `model.kir` (the text form) beside `model.kir.bin` (the weights of every
//! constant larger than [`crate::text::INLINE_MAX`] elements, little-endian, each at a
//! 64-byte aligned offset, so that the file can be mapped and used in place).

use crate::error::{IrError, Result};
use crate::graph::Graph;
use crate::text::{self, Weights};
use std::path::{Path, PathBuf};

/// The weights file that goes with `kir_path`: its file name plus `.bin`.
pub fn bin_path(kir_path: &Path) -> PathBuf {
    let mut s = kir_path.as_os_str().to_owned();
    s.push(".bin");
    PathBuf::from(s)
}

/// Writes `graph` to `kir_path` and its weights to [`bin_path`]`(kir_path)`.
pub fn save(graph: &Graph, kir_path: &Path) -> Result<()> {
    let mut bin = Vec::new();
    let text = text::print(graph, Weights::External(&mut bin));
    let bin_file = bin_path(kir_path);
    std::fs::write(kir_path, text).map_err(|e| file_error(kir_path, e))?;
    std::fs::write(&bin_file, bin).map_err(|e| file_error(&bin_file, e))?;
    Ok(())
}

/// Reads a graph saved by [`save`]. The `.bin` may be missing when no constant needs it.
pub fn load(kir_path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(kir_path).map_err(|e| file_error(kir_path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        IrError::msg(format!(
            "{}: not UTF-8 text (byte {})",
            kir_path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    let bin_file = bin_path(kir_path);
    let bin = match std::fs::read(&bin_file) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(file_error(&bin_file, e)),
    };
    text::parse(&text, bin.as_deref()).map_err(|e| {
        // Every parse error about weights mentions the .bin; say then whether it was there.
        let missing = if bin.is_none() && e.message.contains(".bin") {
            format!(" ({} does not exist)", bin_file.display())
        } else {
            String::new()
        };
        IrError {
            node: e.node,
            message: format!("{}:{}{missing}", kir_path.display(), e.message),
        }
    })
}

fn file_error(path: &Path, e: std::io::Error) -> IrError {
    IrError::msg(format!("{}: {e}", path.display()))
}
