//! The parser: text to syntax, one graph at a time (nested graphs recursively); `data`
//! reads tensor values, `build` turns the syntax into a `Graph`. Untrusted input: no
//! panics, errors with line:column, allocations bounded by the text and the `.bin`.

use super::build::build;
use super::data::{elem_f32, parse_hex, parse_int};
use super::lex::{error_at, Label, Lexer, Pos, Tok};
use super::MAX_DEPTH;
use crate::attr::AttrValue;
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::Graph;
use crate::op::Op;
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;
use std::collections::HashSet;

pub(super) fn parse(text: &str, bin: Option<&[u8]>) -> Result<Graph> {
    let mut p = Parser::new(text, bin)?;
    let g = p.graph(0)?;
    if p.tok != Tok::Eof {
        return Err(p.expected("the end of the text after the graph"));
    }
    Ok(g)
}

pub(super) struct Param {
    pub(super) name: String,
    pub(super) ty: TensorType,
    pub(super) pos: Pos,
}

pub(super) struct Ref {
    pub(super) sigil: char,
    pub(super) label: Label,
    pub(super) index: Option<usize>,
    pub(super) pos: Pos,
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

pub(super) enum Stmt {
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

pub(super) struct Parser<'s, 'b> {
    lex: Lexer<'s>,
    /// The current (not yet consumed) token and where it starts.
    pub(super) tok: Tok<'s>,
    pub(super) pos: Pos,
    pub(super) bin: Option<&'b [u8]>,
    /// Bytes of the `.bin` decoded so far; their sum may not exceed its size, so repeated
    /// references cannot multiply one file's bytes in memory.
    pub(super) bin_used: usize,
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
    pub(super) fn advance(&mut self) -> Result<(Tok<'s>, Pos)> {
        let (next, pos) = self.lex.next()?;
        let tok = std::mem::replace(&mut self.tok, next);
        let at = std::mem::replace(&mut self.pos, pos);
        Ok((tok, at))
    }

    pub(super) fn expected(&self, what: &str) -> IrError {
        error_at(self.pos, format!("expected {what}, found {}", self.tok.describe()))
    }

    pub(super) fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }

    pub(super) fn is_word(&self, w: &str) -> bool {
        self.tok == Tok::Ident(w)
    }

    pub(super) fn punct(&mut self, c: char) -> Result<Pos> {
        if !self.is_punct(c) {
            return Err(self.expected(&format!("`{c}`")));
        }
        Ok(self.advance()?.1)
    }

    /// Parses `item` repeatedly, separated by commas, up to the closing `close`, which it
    /// consumes. The opening bracket is already consumed.
    pub(super) fn comma_list<T>(
        &mut self,
        close: char,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
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
}
