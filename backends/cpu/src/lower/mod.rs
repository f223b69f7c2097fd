//! Lowering a whole graph, with every shape known, to machine code: one function per kernel
//! and one entry function that runs them in order over a planned arena. The same code goes
//! into a `JITModule` (tests, and the CPU device where shapes are bound) or an
//! `ObjectModule` (the ahead-of-time artifact, issue 6), so everything here is generic over
//! `cranelift_module::Module` and calls nothing outside the module but libc and libm.
//!
//! # The kernel ABI
//!
//! Every kernel is `extern "C" fn(args: *const *mut u8, start: u64, end: u64)` (the
//! elementwise generator's ABI, [`crate::codegen::signature`]): `args` holds one address per
//! [`Arg`] of its [`Kernel`], in that order, and one call computes work units
//! `start..end` of [`Kernel::units`] (rows, planes, row tiles: the kernel's choice). Units
//! are independent, so the entry may hand ranges to threads; a kernel never assumes it gets
//! all of them in one call. Scratch a kernel needs (an A panel, an edge tile) lives in its
//! own stack frame: no heap, no state between calls.
//!
//! # Who lowers what
//!
//! [`lower_node`] tries, in order: `gemm` (Conv, MatMul, Gemm, and `Op::Fused` whose body is
//! one of those anchors followed by its epilogue), then the other lowerings in this folder.
//! A `Fused` node no lowering takes whole is inlined by the caller (its body's nodes lowered
//! one by one, intermediates in the arena). A node nothing lowers is an
//! [`LowerError::Unsupported`] naming it: the artifact has no `ir::eval` to fall back on.

use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use kiln_ir::{DType, Node, Tensor};
use std::fmt;

/// Where one kernel argument's address comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// The node's input `i` (an arena slot, a graph input, or a constant the entry places in
    /// read-only data). A constant the kernel baked into code or its own data object (packed
    /// weights) is simply not listed, and the entry emits no copy of it for this kernel.
    Input(usize),
    /// The node's output `i`.
    Output(usize),
    /// A data object the lowering defined through [`LowerCtx::data`].
    Data(DataId),
}

/// One lowered kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub func: FuncId,
    pub args: Vec<Arg>,
    /// Independent work units; the entry calls `func(args, start, end)` over `0..units`.
    pub units: u64,
    /// For profiles and `kiln dump`: "conv+add+relu (gemm)", "maxpool", "elementwise".
    pub kind: String,
}

/// A node input as the lowering sees it: concrete type, and the value when constant.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub value: Option<&'a Tensor>,
}

/// The node's data input (input 0), or an error naming the node when it has none.
pub(crate) fn data_input<'a>(node: &Node, inputs: &[Option<Operand<'a>>]) -> Result<Operand<'a>> {
    inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| LowerError::unsupported(node, "no data"))
}

/// A node output's concrete type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LowerError {
    /// No lowering covers this node (op, dtype, attribute); names node and reason.
    Unsupported(String),
    /// Cranelift refused what we built: a bug here, reported, never a panic.
    Module(String),
}

impl fmt::Display for LowerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LowerError::Unsupported(m) => write!(f, "no generated kernel: {m}"),
            LowerError::Module(m) => write!(f, "code generation failed: {m}"),
        }
    }
}

impl std::error::Error for LowerError {}

impl LowerError {
    pub fn unsupported(node: &Node, why: impl fmt::Display) -> LowerError {
        LowerError::Unsupported(format!("node {} ({}): {why}", node.name, node.op.name()))
    }
}

pub type Result<T> = std::result::Result<T, LowerError>;

/// What every lowering shares: the module, the GEMM microkernels when the target has them,
/// and unique symbol names.
pub struct LowerCtx<'m, M: Module> {
    pub module: &'m mut M,
    /// The AVX2+FMA microkernels defined in `module` (index r computes r+1 rows of 16), or
    /// `None` for a target without them: the GEMM lowering then emits portable CLIF.
    pub microkernels: Option<Vec<FuncId>>,
    /// Prefix of every symbol this lowering defines (the artifact's name).
    pub prefix: String,
    counter: usize,
    /// `Some` when weights go to a file beside the code (`--weights file`): [`Self::data`]
    /// then records the bytes here and defines only a one-byte placeholder, and the entry
    /// passes such data to kernels as `weights + offset` (so a kernel must reach its data
    /// only through [`Arg::Data`], never by naming the `DataId` in its code).
    pub external: Option<Vec<External>>,
}

/// Data kept out of the module (see [`LowerCtx::external`]).
#[derive(Clone, Debug)]
pub struct External {
    pub id: DataId,
    pub bytes: Vec<u8>,
    pub align: u64,
}

impl<'m, M: Module> LowerCtx<'m, M> {
    pub fn new(module: &'m mut M, prefix: &str, microkernels: Option<Vec<FuncId>>) -> Self {
        LowerCtx { module, microkernels, prefix: prefix.to_string(), counter: 0, external: None }
    }

    /// A fresh local symbol name: `{prefix}_{what}_{n}`.
    pub fn fresh_name(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("{}_{}_{}", self.prefix, what, self.counter)
    }

    /// Defines read-only data (weights, packed panels, tables) aligned to `align` bytes.
    pub fn data(&mut self, what: &str, bytes: Vec<u8>, align: u64) -> Result<DataId> {
        let name = self.fresh_name(what);
        let id = self
            .module
            .declare_data(&name, Linkage::Local, false, false)
            .map_err(|e| LowerError::Module(format!("declaring {name}: {e}")))?;
        let mut desc = DataDescription::new();
        match &mut self.external {
            Some(list) => {
                desc.define_zeroinit(1);
                list.push(External { id, bytes, align });
            }
            None => {
                desc.define(bytes.into_boxed_slice());
                desc.set_align(align);
            }
        }
        self.module
            .define_data(id, &desc)
            .map_err(|e| LowerError::Module(format!("defining {name}: {e}")))?;
        Ok(id)
    }
}

mod clif;
mod copy;
mod elementwise;
mod entry;
mod gemm;
pub mod jit;
mod movement;
mod normalize;
mod pool;
pub mod program;
mod reduce;
mod rows;

/// Lowers one node (see the module docs for the order lowerings are tried in).
pub fn lower_node<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    outputs: &[OutType],
) -> Result<Kernel> {
    if let Some(kernel) = gemm::lower(ctx, node, inputs, outputs)? {
        return Ok(kernel);
    }
    // Data movement first: Identity is also a unary op, and a copy is all it needs.
    if let Some(kernel) = movement::lower(ctx, node, inputs, outputs)? {
        return Ok(kernel);
    }
    if let Some(kernel) = elementwise::lower(ctx, node, inputs, outputs)? {
        return Ok(kernel);
    }
    if let Some(kernel) = pool::lower(ctx, node, inputs, outputs)? {
        return Ok(kernel);
    }
    if let Some(kernel) = reduce::lower(ctx, node, inputs, outputs)? {
        return Ok(kernel);
    }
    if let Some(kernel) = normalize::lower(ctx, node, inputs, outputs)? {
        return Ok(kernel);
    }
    Err(LowerError::unsupported(node, "no lowering covers this op"))
}
