//! Streaming GraphDef reading for frozen graphs: the file is read field by field, and the
//! `tensor_content` of large constants is decoded straight from the file into its tensor,
//! so weights exist in memory once (never the whole file plus its tensors). Everything
//! else is handed to prost field by field.

use super::proto::{AttrValue, FunctionDefLibrary, NodeDef, TensorProto};
use super::tensor::{concrete_shape, dtype_from_tf};
use kiln_ir::tensor::checked_numel;
use kiln_ir::{with_dtype, Element, IrError, Result, Tensor};
use prost::Message;
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

/// Attribute values at least this large are streamed; smaller ones go through prost.
const STREAM_MIN: u64 = 1 << 16;
const CHUNK: usize = 1 << 16;

struct Stream<R: Read> {
    r: R,
    pos: u64,
}

impl<R: Read> Stream<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        self.r.read_exact(buf).map_err(|e| {
            IrError::msg(format!(
                "the file ends early or cannot be read at byte {}: {e}",
                self.pos
            ))
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let mut b = [0u8];
            self.fill(&mut b)?;
            v |= u64::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(IrError::msg(format!(
            "overlong varint at byte {}",
            self.pos
        )))
    }

    fn tag(&mut self) -> Result<(u64, u8)> {
        let t = self.varint()?;
        Ok((t >> 3, (t & 7) as u8))
    }

    /// A length prefix, checked against the end of the enclosing message.
    fn len_within(&mut self, end: u64) -> Result<u64> {
        let l = self.varint()?;
        match self.pos.checked_add(l) {
            Some(e) if e <= end => Ok(l),
            _ => Err(IrError::msg(format!(
                "a field of {l} bytes at byte {} runs past its message",
                self.pos
            ))),
        }
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        let n = usize::try_from(n).map_err(|_| IrError::msg("a field is too large"))?;
        let mut v = vec![0u8; n];
        self.fill(&mut v)?;
        Ok(v)
    }

    /// One field, re-encoded (tag and payload) for prost to merge.
    fn raw_field(&mut self, field: u64, wt: u8, end: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        prost::encoding::encode_varint((field << 3) | u64::from(wt), &mut out);
        match wt {
            0 => prost::encoding::encode_varint(self.varint()?, &mut out),
            1 | 5 => {
                let n = if wt == 1 { 8 } else { 4 };
                if self.pos + n > end {
                    return Err(IrError::msg(format!(
                        "a field at byte {} runs past its message",
                        self.pos
                    )));
                }
                out.extend(self.bytes(n)?);
            }
            2 => {
                let l = self.len_within(end)?;
                prost::encoding::encode_varint(l, &mut out);
                out.extend(self.bytes(l)?);
            }
            w => {
                return Err(IrError::msg(format!(
                    "unsupported protobuf wire type {w} at byte {}",
                    self.pos
                )))
            }
        }
        Ok(out)
    }

    /// Reads `n` bytes of little-endian elements straight into a tensor.
    fn tensor(&mut self, proto: &TensorProto, n: u64) -> Result<Tensor> {
        let dtype = dtype_from_tf(proto.dtype)?;
        let shape = concrete_shape(proto.tensor_shape.as_ref())?;
        let count = checked_numel(&shape)?;
        let size = dtype.size();
        if (count as u64).checked_mul(size as u64) != Some(n) {
            return Err(IrError::msg(format!(
                "a {dtype} tensor of shape {shape:?} has {n} bytes of content"
            )));
        }
        with_dtype!(dtype, T => {
            let mut v: Vec<T> = Vec::with_capacity(count);
            let mut buf = vec![0u8; CHUNK * size];
            let mut left = count;
            while left > 0 {
                let k = left.min(CHUNK);
                let chunk = &mut buf[..k * size];
                self.fill(chunk)?;
                v.extend(chunk.chunks_exact(size).map(<T as Element>::from_le_bytes));
                left -= k;
            }
            Tensor::new(shape, v)
        })
    }

    fn tensor_proto(&mut self, end: u64) -> Result<(TensorProto, Option<Tensor>)> {
        let mut tp = TensorProto::default();
        let mut content = None;
        while self.pos < end {
            let (f, wt) = self.tag()?;
            if f == 4 && wt == 2 {
                let l = self.len_within(end)?;
                content = Some(self.tensor(&tp, l)?);
            } else {
                let raw = self.raw_field(f, wt, end)?;
                tp.merge(raw.as_slice())
                    .map_err(|e| IrError::msg(format!("bad tensor: {e}")))?;
            }
        }
        Ok((tp, content))
    }

    fn attr_value(&mut self, end: u64) -> Result<(AttrValue, Option<Tensor>)> {
        let mut av = AttrValue::default();
        let mut tensor = None;
        while self.pos < end {
            let (f, wt) = self.tag()?;
            if f == 8 && wt == 2 {
                let l = self.len_within(end)?;
                let (tp, t) = self.tensor_proto(self.pos + l)?;
                av.value = Some(super::proto::attr_value::Value::Tensor(tp));
                tensor = t;
            } else {
                let raw = self.raw_field(f, wt, end)?;
                av.merge(raw.as_slice())
                    .map_err(|e| IrError::msg(format!("bad attribute: {e}")))?;
            }
        }
        Ok((av, tensor))
    }

    fn node(&mut self, end: u64) -> Result<(NodeDef, Option<Tensor>)> {
        let mut node = NodeDef::default();
        let mut tensor = None;
        while self.pos < end {
            let (f, wt) = self.tag()?;
            if f != 5 || wt != 2 {
                let raw = self.raw_field(f, wt, end)?;
                node.merge(raw.as_slice())
                    .map_err(|e| IrError::msg(format!("bad node: {e}")))?;
                continue;
            }
            let l = self.len_within(end)?;
            let entry_end = self.pos + l;
            let mut key = String::new();
            let mut value = AttrValue::default();
            while self.pos < entry_end {
                let (ef, ewt) = self.tag()?;
                match (ef, ewt) {
                    (1, 2) => {
                        let kl = self.len_within(entry_end)?;
                        key = String::from_utf8(self.bytes(kl)?)
                            .map_err(|_| IrError::msg("an attribute name is not UTF-8"))?;
                    }
                    (2, 2) => {
                        let vl = self.len_within(entry_end)?;
                        if vl >= STREAM_MIN {
                            let (av, t) = self.attr_value(self.pos + vl)?;
                            value = av;
                            tensor = t;
                        } else {
                            let b = self.bytes(vl)?;
                            value = AttrValue::decode(b.as_slice())
                                .map_err(|e| IrError::msg(format!("bad attribute: {e}")))?;
                        }
                    }
                    _ => {
                        self.raw_field(ef, ewt, entry_end)?;
                    }
                }
            }
            node.attr.insert(key, value);
        }
        Ok((node, tensor))
    }
}

/// The nodes, function library and the tensors decoded while streaming (by node name).
pub struct StreamedGraph {
    pub nodes: Vec<NodeDef>,
    pub library: Option<FunctionDefLibrary>,
    pub tensors: HashMap<String, Tensor>,
}

pub fn read_graph_def(path: &Path) -> Result<StreamedGraph> {
    let file = std::fs::File::open(path)
        .map_err(|e| IrError::msg(format!("cannot read the file: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| IrError::msg(format!("cannot read the file: {e}")))?
        .len();
    read_graph_def_from(BufReader::with_capacity(1 << 16, file), len)
}

/// Reads a GraphDef of `len` bytes from `r` (a file, or a buffer in memory).
pub fn read_graph_def_from(r: impl Read, len: u64) -> Result<StreamedGraph> {
    let mut s = Stream { r, pos: 0 };
    let mut g = StreamedGraph {
        nodes: Vec::new(),
        library: None,
        tensors: HashMap::new(),
    };
    let context =
        |e: IrError| IrError::msg(format!("not a valid TensorFlow GraphDef: {}", e.message));
    while s.pos < len {
        let (f, wt) = s.tag().map_err(context)?;
        match (f, wt) {
            (1, 2) => {
                let l = s.len_within(len).map_err(context)?;
                let (node, t) = s.node(s.pos + l).map_err(context)?;
                if let Some(t) = t {
                    g.tensors.insert(node.name.clone(), t);
                }
                g.nodes.push(node);
            }
            (2, 2) => {
                let l = s.len_within(len).map_err(context)?;
                let b = s.bytes(l).map_err(context)?;
                g.library = Some(
                    FunctionDefLibrary::decode(b.as_slice())
                        .map_err(|e| context(IrError::msg(e.to_string())))?,
                );
            }
            _ => {
                s.raw_field(f, wt, len).map_err(context)?;
            }
        }
    }
    Ok(g)
}
