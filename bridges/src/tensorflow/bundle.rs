//! The tensor bundle of a SavedModel's variables: `variables.index`, a LevelDB-format
//! table (SSTable) of `BundleEntryProto` keyed by checkpoint key, and the
//! `variables.data-NNNNN-of-MMMMM` shards holding the raw little-endian tensor bytes.

use super::proto::{BundleEntryProto, BundleHeaderProto};
use super::tensor::{concrete_shape, dtype_from_tf};
use kiln_ir::tensor::checked_numel;
use kiln_ir::{IrError, Result, Tensor};
use prost::Message;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const FOOTER_LEN: usize = 48;
const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Each block is followed by a compression-type byte and a CRC.
const TRAILER_LEN: usize = 5;
/// Elements decoded per read of a variables shard.
const CHUNK: usize = 1 << 16;

pub struct Bundle {
    /// `variables/variables`: shard files are this plus `.data-NNNNN-of-MMMMM`.
    prefix: PathBuf,
    num_shards: i32,
    entries: HashMap<String, BundleEntryProto>,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| IrError::msg("truncated varint in the variables index"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(IrError::msg("overlong varint in the variables index"))
}

fn usize_varint(buf: &[u8], pos: &mut usize) -> Result<usize> {
    usize::try_from(varint(buf, pos)?)
        .map_err(|_| IrError::msg("a size in the variables index does not fit in memory"))
}

/// The (offset, size) of a block.
fn block_handle(buf: &[u8], pos: &mut usize) -> Result<(usize, usize)> {
    Ok((usize_varint(buf, pos)?, usize_varint(buf, pos)?))
}

/// The contents of the block at `(offset, size)`, checked for compression.
fn block(file: &[u8], (offset, size): (usize, usize)) -> Result<&[u8]> {
    let end = offset
        .checked_add(size)
        .and_then(|e| e.checked_add(TRAILER_LEN))
        .filter(|&e| e <= file.len())
        .ok_or_else(|| {
            IrError::msg(format!(
                "block at {offset} (+{size}) runs past the end of the variables index"
            ))
        })?;
    let compression = file[end - TRAILER_LEN];
    match compression {
        0 => Ok(&file[offset..offset + size]),
        1 => Err(IrError::msg(
            "the variables index uses snappy-compressed blocks, which kiln does not read",
        )),
        c => Err(IrError::msg(format!(
            "the variables index uses unknown block compression {c}"
        ))),
    }
}

/// The key-value entries of one block (keys are prefix-compressed against the previous).
fn block_entries(data: &[u8]) -> Result<Vec<(Vec<u8>, &[u8])>> {
    if data.len() < 4 {
        return Err(IrError::msg("a block of the variables index is too short"));
    }
    let nr = u32::from_le_bytes([
        data[data.len() - 4],
        data[data.len() - 3],
        data[data.len() - 2],
        data[data.len() - 1],
    ]) as usize;
    let restarts_len = nr
        .checked_mul(4)
        .and_then(|r| r.checked_add(4))
        .filter(|&r| r <= data.len())
        .ok_or_else(|| IrError::msg("a block of the variables index has a bad restart count"))?;
    let body = &data[..data.len() - restarts_len];
    let mut out = Vec::new();
    let mut pos = 0;
    let mut key: Vec<u8> = Vec::new();
    while pos < body.len() {
        let shared = usize_varint(body, &mut pos)?;
        let non_shared = usize_varint(body, &mut pos)?;
        let value_len = usize_varint(body, &mut pos)?;
        if shared > key.len() {
            return Err(IrError::msg(
                "a key of the variables index shares more than the previous key has",
            ));
        }
        let kend = pos.checked_add(non_shared).filter(|&e| e <= body.len());
        let vend = kend
            .and_then(|k| k.checked_add(value_len))
            .filter(|&e| e <= body.len());
        let (Some(kend), Some(vend)) = (kend, vend) else {
            return Err(IrError::msg(
                "an entry of the variables index runs past its block",
            ));
        };
        key.truncate(shared);
        key.extend_from_slice(&body[pos..kend]);
        out.push((key.clone(), &body[kend..vend]));
        pos = vend;
    }
    Ok(out)
}

impl Bundle {
    /// Reads `<prefix>.index`.
    pub fn open(prefix: &Path) -> Result<Bundle> {
        let index_path = prefix.with_extension("index");
        let file = std::fs::read(&index_path).map_err(|e| {
            IrError::msg(format!(
                "cannot read the variables index {}: {e}",
                index_path.display()
            ))
        })?;
        if file.len() < FOOTER_LEN {
            return Err(IrError::msg(format!(
                "{} is too short to be a variables index",
                index_path.display()
            )));
        }
        let footer = &file[file.len() - FOOTER_LEN..];
        let mut m = [0u8; 8];
        m.copy_from_slice(&footer[40..48]);
        if u64::from_le_bytes(m) != MAGIC {
            return Err(IrError::msg(format!(
                "{} is not a variables index (bad table magic)",
                index_path.display()
            )));
        }
        let mut pos = 0;
        let _metaindex = block_handle(footer, &mut pos)?;
        let index = block_handle(footer, &mut pos)?;
        let mut entries = HashMap::new();
        let mut num_shards = 1;
        for (_, handle) in block_entries(block(&file, index)?)? {
            let mut p = 0;
            let h = block_handle(handle, &mut p)?;
            for (key, value) in block_entries(block(&file, h)?)? {
                if key.is_empty() {
                    let header = BundleHeaderProto::decode(value).map_err(|e| {
                        IrError::msg(format!("bad bundle header in the variables index: {e}"))
                    })?;
                    num_shards = header.num_shards.max(1);
                    continue;
                }
                let key = String::from_utf8_lossy(&key).into_owned();
                let entry = BundleEntryProto::decode(value).map_err(|e| {
                    IrError::msg(format!("bad entry for `{key}` in the variables index: {e}"))
                })?;
                entries.insert(key, entry);
            }
        }
        Ok(Bundle {
            prefix: prefix.to_path_buf(),
            num_shards,
            entries,
        })
    }

    /// Reads the tensor stored under `key` from its shard.
    pub fn tensor(&self, key: &str) -> Result<Tensor> {
        let e = self
            .entries
            .get(key)
            .ok_or_else(|| IrError::msg(format!("the variables index has no entry `{key}`")))?;
        if !e.slices.is_empty() {
            return Err(IrError::msg(format!(
                "variable `{key}` is partitioned into slices, which kiln does not read"
            )));
        }
        let dtype = dtype_from_tf(e.dtype)
            .map_err(|err| IrError::msg(format!("variable `{key}`: {}", err.message)))?;
        let shape = concrete_shape(e.shape.as_ref())?;
        let n = checked_numel(&shape)?;
        let size = usize::try_from(e.size)
            .map_err(|_| IrError::msg(format!("variable `{key}` has a negative size")))?;
        let offset = u64::try_from(e.offset)
            .map_err(|_| IrError::msg(format!("variable `{key}` has a negative offset")))?;
        if n.checked_mul(dtype.size()) != Some(size) {
            return Err(IrError::msg(format!(
                "variable `{key}`: {size} bytes stored for a {dtype} tensor of shape {shape:?}"
            )));
        }
        let shard = format!(
            "{}.data-{:05}-of-{:05}",
            self.prefix
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or("variables"),
            e.shard_id,
            self.num_shards
        );
        let path = self.prefix.with_file_name(shard);
        let mut f = std::fs::File::open(&path).map_err(|err| {
            IrError::msg(format!(
                "cannot open the variables shard {}: {err}",
                path.display()
            ))
        })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if offset.checked_add(size as u64).is_none_or(|end| end > len) {
            return Err(IrError::msg(format!(
                "variable `{key}` lies past the end of {} ({len} bytes)",
                path.display()
            )));
        }
        let read_err = |err: std::io::Error| {
            IrError::msg(format!(
                "cannot read variable `{key}` from {}: {err}",
                path.display()
            ))
        };
        f.seek(SeekFrom::Start(offset)).map_err(read_err)?;
        // Decoded chunk by chunk into the tensor: the bytes are never held whole.
        let esize = dtype.size();
        kiln_ir::with_dtype!(dtype, T => {
            let mut v: Vec<T> = Vec::with_capacity(n);
            let mut buf = vec![0u8; CHUNK * esize];
            let mut left = n;
            while left > 0 {
                let k = left.min(CHUNK);
                let chunk = &mut buf[..k * esize];
                f.read_exact(chunk).map_err(read_err)?;
                v.extend(chunk.chunks_exact(esize).map(<T as kiln_ir::Element>::from_le_bytes));
                left -= k;
            }
            Tensor::new(shape, v)
        })
    }
}
