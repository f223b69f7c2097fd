//! The parser: text to syntax (one graph at a time, nested graphs recursively), then syntax
//! to a `Graph`. Untrusted input: no panics, errors with line:column, allocations bounded
//! by the text and the `.bin`.

use super::lex::{error_at, Label, Lexer, Pos, Tok};
use super::MAX_DEPTH;
use crate::attr::AttrValue;
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::{Graph, Node, NodeId, Value};
use crate::op::Op;
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{checked_numel, Data, Tensor};
use half::{bf16, f16};
use std::collections::{HashMap, HashSet};

pub(super) fn parse(text: &str, bin: Option<&[u8]>) -> Result<Graph> {
    let mut p = Parser::new(text, bin)?;
    let g = p.graph(0)?;
    if p.tok != Tok::Eof {
        return Err(p.expected("the end of the text after the graph"));
    }
    Ok(g)
}

struct Param {
    name: String,
    ty: TensorType,
    pos: Pos,
}

struct Ref {
    sigil: char,
    label: Label,
    index: Option<usize>,
    pos: Pos,
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.sigil, self.label)?;
        match self.index {
            Some(i) => write!(f, ".{i}"),
            None => Ok(()),
        }
    }
}

enum Stmt {
    Input {
        name: String,
        pos: Pos,
    },
    Const {
        label: Label,
        value: Tensor,
        name: Option<String>,
        pos: Pos,
    },
    Node {
        id: usize,
        op: Op,
        args: Vec<Option<Ref>>,
        outputs: Vec<TensorType>,
        name: String,
        pos: Pos,
    },
}

struct Parser<'s, 'b> {
    lex: Lexer<'s>,
    /// The current (not yet consumed) token and where it starts.
    tok: Tok<'s>,
    pos: Pos,
    bin: Option<&'b [u8]>,
    /// Bytes of the `.bin` decoded so far; their sum may not exceed its size, so repeated
    /// references cannot multiply one file's bytes in memory.
    bin_used: usize,
}

impl<'s, 'b> Parser<'s, 'b> {
    fn new(text: &'s str, bin: Option<&'b [u8]>) -> Result<Parser<'s, 'b>> {
        let mut lex = Lexer::new(text);
        let (tok, pos) = lex.next()?;
        Ok(Parser {
            lex,
            tok,
            pos,
            bin,
            bin_used: 0,
        })
    }

    /// Consumes the current token, returning it.
    fn advance(&mut self) -> Result<(Tok<'s>, Pos)> {
        let (next, pos) = self.lex.next()?;
        let tok = std::mem::replace(&mut self.tok, next);
        let at = std::mem::replace(&mut self.pos, pos);
        Ok((tok, at))
    }

    fn expected(&self, what: &str) -> IrError {
        error_at(self.pos, format!("expected {what}, found {}", self.tok.describe()))
    }

    fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }

    fn is_word(&self, w: &str) -> bool {
        self.tok == Tok::Ident(w)
    }

    fn punct(&mut self, c: char) -> Result<Pos> {
        if !self.is_punct(c) {
            return Err(self.expected(&format!("`{c}`")));
        }
        Ok(self.advance()?.1)
    }

    /// Parses `item` repeatedly, separated by commas, up to the closing `close`, which it
    /// consumes. The opening bracket is already consumed.
    fn comma_list<T>(&mut self, close: char, mut item: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        if self.is_punct(close) {
            self.advance()?;
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if self.is_punct(',') {
                self.advance()?;
            } else if self.is_punct(close) {
                self.advance()?;
                return Ok(out);
            } else {
                return Err(self.expected(&format!("`,` or `{close}`")));
            }
        }
    }

    fn graph(&mut self, depth: usize) -> Result<Graph> {
        if depth > MAX_DEPTH {
            return Err(error_at(self.pos, format!("graphs nest more than {MAX_DEPTH} deep")));
        }
        if !self.is_word("graph") {
            return Err(self.expected("`graph`"));
        }
        self.advance()?;
        let name = match self.advance()? {
            (Tok::Ident(s), _) => s.to_string(),
            (Tok::Str(s), _) => s,
            (t, pos) => {
                return Err(error_at(
                    pos,
                    format!("expected the graph's name, found {}", t.describe()),
                ))
            }
        };
        self.punct('(')?;
        let inputs = self.comma_list(')', |p| p.param())?;
        if self.tok != Tok::Arrow {
            return Err(self.expected("`->`"));
        }
        self.advance()?;
        self.punct('(')?;
        let outputs = self.comma_list(')', |p| p.param())?;
        self.punct('{')?;
        let mut stmts = Vec::new();
        while !self.is_word("return") {
            stmts.push(self.stmt(depth)?);
        }
        let ret_pos = self.advance()?.1;
        let mut rets = Vec::new();
        if !self.is_punct('}') {
            loop {
                rets.push(self.reference()?);
                if !self.is_punct(',') {
                    break;
                }
                self.advance()?;
            }
        }
        self.punct('}')?;
        build(name, inputs, outputs, stmts, rets, ret_pos)
    }

    /// `%name: type`
    fn param(&mut self) -> Result<Param> {
        let (tok, pos) = self.advance()?;
        let name = match tok {
            Tok::Ref {
                sigil: '%',
                label: Label::Name(s),
                index: None,
            } => s,
            t => {
                return Err(error_at(
                    pos,
                    format!("expected a named parameter like `%x`, found {}", t.describe()),
                ))
            }
        };
        self.punct(':')?;
        let ty = self.ty()?;
        Ok(Param { name, ty, pos })
    }

    fn stmt(&mut self, depth: usize) -> Result<Stmt> {
        let (tok, pos) = self.advance()?;
        match tok {
            Tok::Ident("input") => match self.advance()? {
                (
                    Tok::Ref {
                        sigil: '%',
                        label: Label::Name(name),
                        index: None,
                    },
                    pos,
                ) => Ok(Stmt::Input { name, pos }),
                (t, pos) => Err(error_at(
                    pos,
                    format!("expected a graph input like `%x`, found {}", t.describe()),
                )),
            },
            Tok::Ref {
                sigil: '@',
                label,
                index: None,
            } => {
                self.punct('=')?;
                let value = self.tensor()?;
                let name = self.name_suffix()?;
                Ok(Stmt::Const {
                    label,
                    value,
                    name,
                    pos,
                })
            }
            Tok::Ref {
                sigil: '%',
                label: Label::Id(id),
                index: None,
            } => {
                self.punct('=')?;
                let (op_name, op_pos) = match self.advance()? {
                    (Tok::Ident(s), p) => (s, p),
                    (t, p) => return Err(error_at(p, format!("expected an op name, found {}", t.describe()))),
                };
                self.punct('(')?;
                let args = self.comma_list(')', |p| {
                    if p.is_word("_") {
                        p.advance()?;
                        Ok(None)
                    } else {
                        p.reference().map(Some)
                    }
                })?;
                let attrs = if self.is_punct('{') {
                    self.attrs(depth)?
                } else {
                    Vec::new()
                };
                let op = Op::from_parts(op_name, attrs).map_err(|e| error_at(op_pos, e.message))?;
                self.punct(':')?;
                let outputs = if self.is_punct('(') {
                    self.advance()?;
                    self.comma_list(')', |p| p.ty())?
                } else {
                    vec![self.ty()?]
                };
                let name = self.name_suffix()?.unwrap_or_default();
                Ok(Stmt::Node {
                    id,
                    op,
                    args,
                    outputs,
                    name,
                    pos,
                })
            }
            Tok::Ref {
                sigil: '%',
                label: Label::Name(_),
                index: None,
            } => Err(error_at(
                pos,
                "a node is numbered (`%0 = …`); its source name goes in the trailing string",
            )),
            t => Err(error_at(
                pos,
                format!(
                    "expected a statement (`%0 = op(…) : type`, `@name = tensor`, `input %name` or `return`), found {}",
                    t.describe()
                ),
            )),
        }
    }

    /// An optional trailing `"name"`.
    fn name_suffix(&mut self) -> Result<Option<String>> {
        if let Tok::Str(_) = self.tok {
            if let (Tok::Str(s), _) = self.advance()? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    fn reference(&mut self) -> Result<Ref> {
        match self.advance()? {
            (Tok::Ref { sigil, label, index }, pos) => Ok(Ref {
                sigil,
                label,
                index,
                pos,
            }),
            (t, pos) => Err(error_at(
                pos,
                format!("expected a value like `%0`, `%x` or `@w`, found {}", t.describe()),
            )),
        }
    }

    /// `{key=value, …}`
    fn attrs(&mut self, depth: usize) -> Result<Vec<(String, AttrValue)>> {
        self.punct('{')?;
        let mut seen = HashSet::new();
        self.comma_list('}', |p| {
            let key = match p.advance()? {
                (Tok::Ident(k), pos) => {
                    if !seen.insert(k) {
                        return Err(error_at(pos, format!("attribute `{k}` is given twice")));
                    }
                    k.to_string()
                }
                (t, pos) => {
                    return Err(error_at(
                        pos,
                        format!("expected an attribute name, found {}", t.describe()),
                    ))
                }
            };
            p.punct('=')?;
            Ok((key, p.value(depth)?))
        })
    }

    fn value(&mut self, depth: usize) -> Result<AttrValue> {
        if self.is_word("graph") {
            return Ok(AttrValue::Graph(Box::new(self.graph(depth + 1)?)));
        }
        let (tok, pos) = self.advance()?;
        Ok(match tok {
            Tok::Int(s) => AttrValue::Int(parse_int::<i64>(s, pos)?),
            Tok::Float(s) => AttrValue::Float(s.parse::<f32>().map_err(|_| error_at(pos, "not a number"))?),
            Tok::Hex(h) => AttrValue::Float(f32::from_bits(parse_hex::<u32>(h, pos)?)),
            Tok::Ident("true") => AttrValue::Bool(true),
            Tok::Ident("false") => AttrValue::Bool(false),
            Tok::Ident(w) => match DType::from_name(w) {
                Some(dtype) if self.is_punct('[') => {
                    let ty = self.shape_of(dtype)?;
                    AttrValue::Tensor(self.tensor_data(ty, pos)?)
                }
                _ => AttrValue::Word(w.to_string()),
            },
            Tok::Str(s) => AttrValue::Str(s),
            Tok::Punct('[') => self.attr_list()?,
            t => {
                return Err(error_at(
                    pos,
                    format!("expected an attribute value, found {}", t.describe()),
                ))
            }
        })
    }

    /// `[…]` of integers, of numbers, or of strings; `[]` is a list of no strings, which
    /// every list-typed attribute accepts as empty.
    fn attr_list(&mut self) -> Result<AttrValue> {
        let items = self.comma_list(']', |p| match p.advance()? {
            (t @ (Tok::Int(_) | Tok::Float(_) | Tok::Hex(_) | Tok::Str(_)), pos) => Ok((t, pos)),
            (t, pos) => Err(error_at(
                pos,
                format!("expected a number or a string, found {}", t.describe()),
            )),
        })?;
        let Some((first, _)) = items.first() else {
            return Ok(AttrValue::Strs(vec![]));
        };
        let strings = matches!(first, Tok::Str(_));
        if let Some((_, pos)) = items.iter().find(|(t, _)| matches!(t, Tok::Str(_)) != strings) {
            return Err(error_at(*pos, "a list holds numbers or strings, not both"));
        }
        if strings {
            return Ok(AttrValue::Strs(
                items
                    .into_iter()
                    .filter_map(|(t, _)| if let Tok::Str(s) = t { Some(s) } else { None })
                    .collect(),
            ));
        }
        if items.iter().all(|(t, _)| matches!(t, Tok::Int(_))) {
            let ints = items.iter().map(|(t, pos)| match t {
                Tok::Int(s) => parse_int::<i64>(s, *pos),
                _ => Err(error_at(*pos, "expected an integer")),
            });
            return Ok(AttrValue::Ints(ints.collect::<Result<_>>()?));
        }
        let floats = items.iter().map(|(t, pos)| elem_f32(t, *pos));
        Ok(AttrValue::Floats(floats.collect::<Result<_>>()?))
    }

    fn ty(&mut self) -> Result<TensorType> {
        let dtype = match self.advance()? {
            (Tok::Ident(s), pos) => {
                DType::from_name(s).ok_or_else(|| error_at(pos, format!("unknown element type `{s}`")))?
            }
            (t, pos) => {
                return Err(error_at(
                    pos,
                    format!("expected a type like `f32[N,3]`, found {}", t.describe()),
                ))
            }
        };
        self.shape_of(dtype)
    }

    /// `[dims]` or `[*]` after an element type.
    fn shape_of(&mut self, dtype: DType) -> Result<TensorType> {
        self.punct('[')?;
        if self.is_punct('*') {
            self.advance()?;
            self.punct(']')?;
            return Ok(TensorType::new(dtype, Shape::unknown_rank()));
        }
        let dims = self.comma_list(']', |p| match p.advance()? {
            (Tok::Int(s), pos) => s
                .parse::<usize>()
                .map(Dim::Known)
                .map_err(|_| error_at(pos, format!("`{s}` is not a dimension size"))),
            (Tok::Ident(s), _) => Ok(Dim::Sym(s.to_string())),
            (Tok::Str(s), _) => Ok(Dim::Sym(s)),
            (Tok::Punct('?'), _) => Ok(Dim::Unknown),
            (t, pos) => Err(error_at(
                pos,
                format!("expected a dimension (a size, a name or `?`), found {}", t.describe()),
            )),
        })?;
        Ok(TensorType::new(dtype, dims))
    }

    /// `type data` (a constant or a tensor-valued attribute).
    fn tensor(&mut self) -> Result<Tensor> {
        let pos = self.pos;
        let ty = self.ty()?;
        self.tensor_data(ty, pos)
    }

    fn tensor_data(&mut self, ty: TensorType, pos: Pos) -> Result<Tensor> {
        let Some(shape) = ty.shape.concrete() else {
            return Err(error_at(
                pos,
                format!(
                    "a constant's shape must be fully known, found {}",
                    super::print::type_text(&ty)
                ),
            ));
        };
        let numel = checked_numel(&shape).map_err(|e| error_at(pos, e.message))?;
        if self.is_word("bin") {
            return self.bin_data(ty.dtype, shape, numel, pos);
        }
        if !self.is_punct('[') {
            return Err(error_at(
                self.pos,
                format!(
                    "expected the values of this {} constant (`[…]` or `bin(offset, nbytes)`), found {}; \
                     text printed with elided weights is for reading and cannot be parsed back",
                    super::print::type_text(&ty),
                    self.tok.describe()
                ),
            ));
        }
        self.advance()?;
        fn ints<T: std::str::FromStr>(p: &mut Parser) -> Result<Vec<T>> {
            p.comma_list(']', |p| match p.advance()? {
                (Tok::Int(s), pos) => parse_int::<T>(s, pos),
                (t, pos) => Err(error_at(pos, format!("expected an integer, found {}", t.describe()))),
            })
        }
        let data = match ty.dtype {
            DType::F32 => Data::F32(self.comma_list(']', |p| p.advance().and_then(|(t, pos)| elem_f32(&t, pos)))?),
            DType::F64 => Data::F64(self.comma_list(']', |p| {
                p.advance().and_then(|(t, pos)| match t {
                    Tok::Int(s) | Tok::Float(s) => s.parse::<f64>().map_err(|_| error_at(pos, "not a number")),
                    Tok::Hex(h) => parse_hex::<u64>(h, pos).map(f64::from_bits),
                    t => Err(error_at(pos, format!("expected a number, found {}", t.describe()))),
                })
            })?),
            DType::F16 => Data::F16(self.comma_list(']', |p| {
                p.advance()
                    .and_then(|(t, pos)| elem_half(&t, pos, f16::from_f64, f16::from_bits))
            })?),
            DType::BF16 => Data::BF16(self.comma_list(']', |p| {
                p.advance()
                    .and_then(|(t, pos)| elem_half(&t, pos, bf16::from_f64, bf16::from_bits))
            })?),
            DType::I8 => Data::I8(ints(self)?),
            DType::I16 => Data::I16(ints(self)?),
            DType::I32 => Data::I32(ints(self)?),
            DType::I64 => Data::I64(ints(self)?),
            DType::U8 => Data::U8(ints(self)?),
            DType::U16 => Data::U16(ints(self)?),
            DType::U32 => Data::U32(ints(self)?),
            DType::U64 => Data::U64(ints(self)?),
            DType::Bool => Data::Bool(self.comma_list(']', |p| match p.advance()? {
                (Tok::Ident("true"), _) => Ok(true),
                (Tok::Ident("false"), _) => Ok(false),
                (t, pos) => Err(error_at(pos, format!("expected true or false, found {}", t.describe()))),
            })?),
        };
        if data.len() != numel {
            return Err(error_at(
                pos,
                format!(
                    "{} holds {} elements but {} are given",
                    super::print::type_text(&ty),
                    numel,
                    data.len()
                ),
            ));
        }
        Tensor::from_data(shape, data).map_err(|e| error_at(pos, e.message))
    }

    /// `bin(offset, nbytes)`: a range of the `.bin`, checked before anything is allocated.
    fn bin_data(&mut self, dtype: DType, shape: Vec<usize>, numel: usize, pos: Pos) -> Result<Tensor> {
        self.advance()?;
        self.punct('(')?;
        let offset = self.usize_arg()?;
        self.punct(',')?;
        let len = self.usize_arg()?;
        self.punct(')')?;
        let Some(bin) = self.bin else {
            return Err(error_at(pos, "the text refers to a .bin of weights but none was given"));
        };
        let ty = super::print::type_text(&TensorType::known(dtype, &shape));
        if numel.checked_mul(dtype.size()) != Some(len) {
            return Err(error_at(
                pos,
                format!(
                    "{ty} needs {} bytes, bin(…) gives {len}",
                    numel.saturating_mul(dtype.size())
                ),
            ));
        }
        let end = offset.checked_add(len).filter(|&e| e <= bin.len()).ok_or_else(|| {
            error_at(
                pos,
                format!(
                    "bin({offset}, {len}) lies outside the .bin, which holds {} bytes",
                    bin.len()
                ),
            )
        })?;
        self.bin_used = self.bin_used.saturating_add(len);
        if self.bin_used > bin.len() {
            return Err(error_at(
                pos,
                "the bin(…) references add up to more bytes than the .bin holds",
            ));
        }
        let bytes = bin.get(offset..end).unwrap_or(&[]);
        Tensor::from_le_bytes(dtype, shape, bytes).map_err(|e| error_at(pos, e.message))
    }

    fn usize_arg(&mut self) -> Result<usize> {
        match self.advance()? {
            (Tok::Int(s), pos) => parse_int::<usize>(s, pos),
            (t, pos) => Err(error_at(pos, format!("expected a byte count, found {}", t.describe()))),
        }
    }
}

fn parse_int<T: std::str::FromStr>(s: &str, pos: Pos) -> Result<T> {
    s.parse::<T>()
        .map_err(|_| error_at(pos, format!("{s} is out of range for {}", std::any::type_name::<T>())))
}

fn parse_hex<T: num_from_hex::FromHex>(h: &str, pos: Pos) -> Result<T> {
    T::from_hex(h).ok_or_else(|| error_at(pos, format!("0x{h} has more bits than the element type")))
}

mod num_from_hex {
    pub trait FromHex: Sized {
        fn from_hex(h: &str) -> Option<Self>;
    }
    macro_rules! from_hex {
        ($($t:ty),*) => {$(
            impl FromHex for $t {
                fn from_hex(h: &str) -> Option<Self> {
                    <$t>::from_str_radix(h, 16).ok()
                }
            }
        )*};
    }
    from_hex!(u16, u32, u64);
}

fn elem_f32(t: &Tok, pos: Pos) -> Result<f32> {
    match t {
        // f32 is read directly: going through f64 could round twice.
        Tok::Int(s) | Tok::Float(s) => s.parse::<f32>().map_err(|_| error_at(pos, "not a number")),
        Tok::Hex(h) => parse_hex::<u32>(h, pos).map(f32::from_bits),
        t => Err(error_at(pos, format!("expected a number, found {}", t.describe()))),
    }
}

/// f16 and bf16 decimals are read through f64, as the printer checks them.
fn elem_half<H>(t: &Tok, pos: Pos, from_f64: fn(f64) -> H, from_bits: fn(u16) -> H) -> Result<H> {
    match t {
        Tok::Int(s) | Tok::Float(s) => s
            .parse::<f64>()
            .map(from_f64)
            .map_err(|_| error_at(pos, "not a number")),
        Tok::Hex(h) => parse_hex::<u16>(h, pos).map(from_bits),
        t => Err(error_at(pos, format!("expected a number, found {}", t.describe()))),
    }
}

/// Syntax to graph: names resolved in order (a value is used after its definition), input
/// nodes first except those placed by `input` lines, types as written.
fn build(
    name: String,
    inputs: Vec<Param>,
    outputs: Vec<Param>,
    stmts: Vec<Stmt>,
    rets: Vec<Ref>,
    ret_pos: Pos,
) -> Result<Graph> {
    let mut g = Graph::new(name);
    let mut sig: HashMap<&str, usize> = HashMap::new();
    for (i, p) in inputs.iter().enumerate() {
        if sig.insert(p.name.as_str(), i).is_some() {
            return Err(error_at(
                p.pos,
                format!("two graph inputs are named {}", Label::Name(p.name.clone())),
            ));
        }
    }
    let mut placed = HashSet::new();
    for s in &stmts {
        if let Stmt::Input { name, pos } = s {
            if !sig.contains_key(name.as_str()) {
                return Err(error_at(
                    *pos,
                    format!("%{} is not an input of this graph", Label::Name(name.clone())),
                ));
            }
            if !placed.insert(name.as_str()) {
                return Err(error_at(
                    *pos,
                    format!("input %{} is placed twice", Label::Name(name.clone())),
                ));
            }
        }
    }

    // (node, number of outputs) for each `%` and `@` label defined so far.
    let mut values: HashMap<(char, Label), (NodeId, usize)> = HashMap::new();
    let mut input_nodes: Vec<Option<NodeId>> = vec![None; inputs.len()];
    let add_input = |g: &mut Graph, p: &Param| {
        g.nodes.add_node(Node {
            op: Op::Input,
            name: p.name.clone(),
            outputs: vec![p.ty.clone()],
            arity: 0,
        })
    };
    for (i, p) in inputs.iter().enumerate() {
        if !placed.contains(p.name.as_str()) {
            let n = add_input(&mut g, p);
            input_nodes[i] = Some(n);
            values.insert(('%', Label::Name(p.name.clone())), (n, 1));
        }
    }

    for s in stmts {
        match s {
            Stmt::Input { name, .. } => {
                let Some(&i) = sig.get(name.as_str()) else { continue };
                let Some(p) = inputs.get(i) else { continue };
                let n = add_input(&mut g, p);
                if let Some(slot) = input_nodes.get_mut(i) {
                    *slot = Some(n);
                }
                values.insert(('%', Label::Name(name)), (n, 1));
            }
            Stmt::Const {
                label,
                value,
                name,
                pos,
            } => {
                if values.contains_key(&('@', label.clone())) {
                    return Err(error_at(pos, format!("@{label} is defined twice")));
                }
                let name = name.unwrap_or_else(|| match &label {
                    Label::Name(s) => s.clone(),
                    Label::Id(_) => String::new(),
                });
                let n = g.add_const(name, value).node;
                values.insert(('@', label), (n, 1));
            }
            Stmt::Node {
                id,
                op,
                args,
                outputs,
                name,
                pos,
            } => {
                if values.contains_key(&('%', Label::Id(id))) {
                    return Err(error_at(pos, format!("%{id} is defined twice")));
                }
                let ins = args
                    .iter()
                    .map(|a| a.as_ref().map(|r| resolve(&values, r)).transpose())
                    .collect::<Result<Vec<_>>>()?;
                let n_out = outputs.len();
                let n = g.add_node_typed(op, name, &ins, outputs);
                values.insert(('%', Label::Id(id)), (n, n_out));
            }
        }
    }
    g.inputs = input_nodes.into_iter().flatten().collect();

    if rets.len() != outputs.len() {
        return Err(error_at(
            ret_pos,
            format!(
                "the graph declares {} outputs but returns {} values",
                outputs.len(),
                rets.len()
            ),
        ));
    }
    for (p, r) in outputs.into_iter().zip(&rets) {
        let v = resolve(&values, r)?;
        let ty = g.value_type(v);
        if *ty != p.ty {
            return Err(error_at(
                r.pos,
                format!(
                    "output %{} is declared {} but {r} is {}",
                    Label::Name(p.name.clone()),
                    super::print::type_text(&p.ty),
                    super::print::type_text(ty)
                ),
            ));
        }
        g.add_output(p.name, v);
    }
    Ok(g)
}

fn resolve(values: &HashMap<(char, Label), (NodeId, usize)>, r: &Ref) -> Result<Value> {
    let Some(&(node, n_out)) = values.get(&(r.sigil, r.label.clone())) else {
        return Err(error_at(r.pos, format!("{r} is not defined before this point")));
    };
    match r.index {
        None if n_out == 1 => Ok(Value::new(node, 0)),
        None => Err(error_at(
            r.pos,
            format!("{r} has {n_out} outputs; say which one, as in {r}.0"),
        )),
        Some(i) if i < n_out => Ok(Value::new(node, i)),
        Some(i) => Err(error_at(
            r.pos,
            format!("{r} asks for output {i} but the node has {n_out}"),
        )),
    }
}
