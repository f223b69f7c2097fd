//! A [`Plan`] as one CLIF function in any `cranelift_module::Module` (the JIT's, or the
//! ahead-of-time object's).
//!
//! The function is `kernel(args: *const *mut u8, start: u64, end: u64)`: `args` holds the
//! address of every operand (graph inputs, then constant tensors) and then of every output;
//! the call computes output elements `start..end` in row-major order, so threads split a
//! kernel by element ranges. The loop nest: rows of the layout's inner dim; within a row,
//! an f32x4 loop while four elements remain, then a scalar loop. Operands that broadcast
//! along the inner dim are loaded once per row (and splatted); the others are loaded as
//! vectors. Each operand's row offset is recomputed from per-dim counters that advance
//! without division (only the call's first row divides).

use super::emit::Fx;
use super::ops::{self, clif_type, Arg};
use super::plan::{ExprKind, Plan, Scalar};
use super::Unsupported;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Signature, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module};
use kiln_ir::DType;

/// Elements per vector.
const LANES: i64 = 4;

/// The kernel's CLIF signature, in the module's default calling convention.
pub fn signature<M: Module>(module: &M) -> Signature {
    let mut sig = Signature::new(module.isa().default_call_conv());
    for _ in 0..3 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

/// Declares `name` in `module` and defines it as the kernel of `plan`.
pub fn define_kernel<M: Module>(
    module: &mut M,
    name: &str,
    linkage: Linkage,
    plan: &Plan,
) -> Result<FuncId, Unsupported> {
    let sig = signature(module);
    let id = module
        .declare_function(name, linkage, &sig)
        .map_err(|e| Unsupported::new(format!("declaring {name}: {e}")))?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fbc = FunctionBuilderContext::new();
    let fma = module.isa().has_native_fma();
    let frontend = module.isa().frontend_config();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
        Lowering { plan, fma }.build(&mut b)?;
        b.seal_all_blocks();
        b.finalize(frontend);
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| Unsupported::new(format!("compiling {name}: {e:?}")))?;
    Ok(id)
}

struct Lowering<'p> {
    plan: &'p Plan,
    fma: bool,
}

/// Per row: each operand's address for the row, and the value of the operands that stay
/// constant along it.
struct Row {
    base: Vec<Option<Value>>,
    splat: Vec<Option<Value>>,
    scalar: Vec<Option<Value>>,
    outputs: Vec<Value>,
}

fn flags() -> MemFlagsData {
    // Not `aligned`: rows start anywhere, and an unaligned vector load must not be folded
    // into an SSE instruction that requires alignment.
    MemFlagsData::new().with_notrap()
}

impl Lowering<'_> {
    fn build(&self, b: &mut FunctionBuilder) -> Result<(), Unsupported> {
        let plan = self.plan;
        let layout = &plan.layout;
        let n = layout.inner().max(1) as i64;
        let outer = &layout.dims[..layout.dims.len() - 1];
        let live: Vec<bool> = (0..plan.operands.len())
            .map(|k| plan.exprs.iter().any(|e| e.kind == ExprKind::Load(k)))
            .collect();

        let entry = b.create_block();
        let row_head = b.create_block();
        let tail_head = b.create_block();
        let tail_body = b.create_block();
        let row_end = b.create_block();
        let exit = b.create_block();

        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let &[args, start, end] = b.block_params(entry) else {
            return Err(Unsupported::new(
                "the kernel signature has three parameters",
            ));
        };
        // Operand addresses (those the body reads), then output addresses.
        let needed = live
            .iter()
            .copied()
            .chain(std::iter::repeat_n(true, plan.outputs.len()));
        let ptrs: Vec<Option<Value>> = needed
            .enumerate()
            .map(|(k, needed)| {
                needed.then(|| b.ins().load(types::I64, flags(), args, (k * 8) as i32))
            })
            .collect();
        let row = b.declare_var(types::I64);
        let j_begin = b.declare_var(types::I64);
        let j = b.declare_var(types::I64);
        let counters: Vec<Variable> = outer.iter().map(|_| b.declare_var(types::I64)).collect();
        let row0 = b.ins().udiv_imm_s(start, n);
        let n_minus_1 = b.ins().iadd_imm_s(end, n - 1);
        let last_row = b.ins().udiv_imm_s(n_minus_1, n);
        let row0_start = b.ins().imul_imm_s(row0, n);
        let j0 = b.ins().isub(start, row0_start);
        b.def_var(row, row0);
        b.def_var(j_begin, j0);
        // The first row's position in the outer dims: the only divisions of the call.
        let mut step: i64 = 1;
        for (d, &size) in outer.iter().enumerate().rev() {
            let q = b.ins().udiv_imm_s(row0, step);
            let idx = b.ins().urem_imm_s(q, size as i64);
            b.def_var(counters[d], idx);
            step *= size as i64;
        }
        let any = b.ins().icmp(IntCC::UnsignedLessThan, start, end);
        b.ins().brif(any, row_head, &[], exit, &[]);

        // Row setup.
        b.switch_to_block(row_head);
        let r = b.use_var(row);
        let jb = b.use_var(j_begin);
        let row_start = b.ins().imul_imm_s(r, n);
        let left = b.ins().isub(end, row_start);
        let n_val = b.ins().iconst(types::I64, n);
        let j_end = b.ins().umin(left, n_val);
        let idx: Vec<Value> = counters.iter().map(|&c| b.use_var(c)).collect();
        let mut row_vals = Row {
            base: vec![None; plan.operands.len()],
            splat: vec![None; plan.operands.len()],
            scalar: vec![None; plan.operands.len()],
            outputs: Vec::new(),
        };
        for (k, operand) in plan.operands.iter().enumerate() {
            let Some(ptr) = ptrs[k] else { continue };
            let size = operand.dtype.size() as i64;
            let mut addr = ptr;
            for (d, &i) in idx.iter().enumerate() {
                let stride = layout.strides[k][d] as i64;
                if stride != 0 {
                    let off = b.ins().imul_imm_s(i, stride * size);
                    addr = b.ins().iadd(addr, off);
                }
            }
            if *layout.strides[k].last().expect("one stride per dim") == 0 {
                let v = load_scalar(b, operand.dtype, addr);
                row_vals.scalar[k] = Some(v);
                if plan.vector {
                    row_vals.splat[k] = Some(b.ins().splat(types::F32X4, v));
                }
            } else {
                row_vals.base[k] = Some(addr);
            }
        }
        for (o, &e) in plan.outputs.iter().enumerate() {
            let ptr = ptrs[plan.operands.len() + o].expect("outputs are always loaded");
            let size = plan.exprs[e].dtype.size() as i64;
            let off = b.ins().imul_imm_s(row_start, size);
            row_vals.outputs.push(b.ins().iadd(ptr, off));
        }
        b.def_var(j, jb);

        // The f32x4 loop.
        if plan.vector {
            let vec_head = b.create_block();
            let vec_body = b.create_block();
            b.ins().jump(vec_head, &[]);
            b.switch_to_block(vec_head);
            let jv = b.use_var(j);
            let next = b.ins().iadd_imm_s(jv, LANES);
            let fits = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, next, j_end);
            b.ins().brif(fits, vec_body, &[], tail_head, &[]);
            b.switch_to_block(vec_body);
            let jv = b.use_var(j);
            self.body(b, &row_vals, jv, true)?;
            let next = b.ins().iadd_imm_s(jv, LANES);
            b.def_var(j, next);
            b.ins().jump(vec_head, &[]);
        } else {
            b.ins().jump(tail_head, &[]);
        }

        // The scalar loop: the row's last elements, or all of them.
        b.switch_to_block(tail_head);
        let jv = b.use_var(j);
        let more = b.ins().icmp(IntCC::UnsignedLessThan, jv, j_end);
        b.ins().brif(more, tail_body, &[], row_end, &[]);
        b.switch_to_block(tail_body);
        let jv = b.use_var(j);
        self.body(b, &row_vals, jv, false)?;
        let next = b.ins().iadd_imm_s(jv, 1);
        b.def_var(j, next);
        b.ins().jump(tail_head, &[]);

        // Next row: bump the innermost counter and carry outwards, without branches.
        b.switch_to_block(row_end);
        let r = b.use_var(row);
        let r1 = b.ins().iadd_imm_s(r, 1);
        b.def_var(row, r1);
        let zero = b.ins().iconst(types::I64, 0);
        b.def_var(j_begin, zero);
        let mut carry = b.ins().iconst(types::I64, 1);
        for (d, &size) in outer.iter().enumerate().rev() {
            let i = b.use_var(counters[d]);
            let t = b.ins().iadd(i, carry);
            let wrap = b.ins().icmp_imm_s(IntCC::Equal, t, size as i64);
            let i = b.ins().select(wrap, zero, t);
            b.def_var(counters[d], i);
            carry = b.ins().uextend(types::I64, wrap);
        }
        let again = b.ins().icmp(IntCC::UnsignedLessThan, r1, last_row);
        b.ins().brif(again, row_head, &[], exit, &[]);

        b.switch_to_block(exit);
        b.ins().return_(&[]);
        Ok(())
    }

    /// The expression DAG at element `j` of the row, on four lanes or one.
    fn body(
        &self,
        b: &mut FunctionBuilder,
        row: &Row,
        j: Value,
        vector: bool,
    ) -> Result<(), Unsupported> {
        let plan = self.plan;
        let mut fx = Fx {
            b,
            vector,
            fma: self.fma,
        };
        let mut vals: Vec<Option<Value>> = Vec::with_capacity(plan.exprs.len());
        for e in &plan.exprs {
            let v = match &e.kind {
                ExprKind::Load(k) => Some(match row.base[*k] {
                    Some(base) => {
                        let size = plan.operands[*k].dtype.size() as i64;
                        let off = fx.b.ins().imul_imm_s(j, size);
                        let addr = fx.b.ins().iadd(base, off);
                        if vector {
                            fx.b.ins().load(types::F32X4, flags(), addr, 0)
                        } else {
                            load_scalar(fx.b, e.dtype, addr)
                        }
                    }
                    None if vector => row.splat[*k].expect("a splat per inner-broadcast operand"),
                    None => row.scalar[*k].expect("a value per inner-broadcast operand"),
                }),
                ExprKind::Scalar(s) => constant(&mut fx, *s, e.dtype),
                ExprKind::Op(op, args) => {
                    let args: Vec<Option<Arg>> = args
                        .iter()
                        .map(|a| {
                            a.map(|a| Arg {
                                v: vals[a],
                                dtype: plan.exprs[a].dtype,
                                konst: match plan.exprs[a].kind {
                                    ExprKind::Scalar(s) => Some(s),
                                    _ => None,
                                },
                            })
                        })
                        .collect();
                    Some(ops::lower(&mut fx, op, &args, e.dtype)?)
                }
            };
            vals.push(v);
        }
        for (o, &e) in plan.outputs.iter().enumerate() {
            let v = vals[e].ok_or_else(|| Unsupported::new("an output is an integer constant"))?;
            let size = plan.exprs[e].dtype.size() as i64;
            let off = fx.b.ins().imul_imm_s(j, size);
            let addr = fx.b.ins().iadd(row.outputs[o], off);
            fx.b.ins().store(flags(), v, addr, 0);
        }
        Ok(())
    }
}

/// One element of `dtype` at `addr`; a bool reads as 0/1 whatever nonzero byte it holds.
fn load_scalar(b: &mut FunctionBuilder, dtype: DType, addr: Value) -> Value {
    let v = b.ins().load(clif_type(dtype), flags(), addr, 0);
    if dtype == DType::Bool {
        b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
    } else {
        v
    }
}

/// A constant as a value of the current lane width; `None` for an integer on vector lanes
/// (only Pow reads those, from the plan).
fn constant(fx: &mut Fx, s: Scalar, dtype: DType) -> Option<Value> {
    match (s, dtype) {
        (Scalar::F32(v), _) => Some(fx.f(v)),
        (Scalar::Bool(v), _) => Some(fx.mask_const(v)),
        (Scalar::Int(_), _) if fx.vector => None,
        (Scalar::Int(v), d) => Some(fx.b.ins().iconst(clif_type(d), v)),
    }
}
