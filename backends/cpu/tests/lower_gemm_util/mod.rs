//! Shared by tests/lower_gemm.rs and benches/lower_gemm.rs: building one-node graphs,
//! lowering a node into a JITModule and calling its kernel, comparing with `ir::eval`.

#![allow(dead_code)]

use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use kiln_cpu::gemm::module::define_microkernels;
use kiln_cpu::gemm::{Isa, Kernel as GemmKernel};
use kiln_cpu::lower::{lower_node, Arg, Kernel, LowerCtx, Operand, OutType};
use kiln_ir::{DType, Graph, Node, Op, Tensor};
use std::ops::Range;

/// Which microkernels the module gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// The AVX2+FMA machine code where this CPU has it (else the portable ones).
    Native,
    /// The portable CLIF kernels: what a target without the machine code runs.
    Portable,
}

/// Deterministic values in [-1, 1).
pub fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::new(shape.to_vec(), v).unwrap()
}

/// A node `op` over `ins` (constants where `consts` says), its output type inferred.
pub fn node(op: Op, ins: &[&Tensor], consts: &[bool]) -> Node {
    let mut g = Graph::new("g");
    let vals: Vec<_> = ins
        .iter()
        .zip(consts)
        .enumerate()
        .map(|(i, (t, &c))| {
            if c {
                g.add_const(format!("c{i}"), (*t).clone())
            } else {
                g.add_input(format!("x{i}"), kiln_ir::TensorType::known(t.dtype(), t.shape()))
            }
        })
        .collect();
    let inputs: Vec<_> = vals.into_iter().map(Some).collect();
    let id = g.add(op, "node", &inputs, 1).unwrap();
    g.node(id).clone()
}

/// A fused node whose body is `body` (inputs in order).
pub fn fused_node(body: Graph) -> Node {
    let outputs = body.outputs.iter().map(|(_, v)| body.value_type(*v).clone()).collect();
    let arity = body.inputs.len();
    Node { op: Op::Fused { body: Box::new(body) }, name: "fused".into(), outputs, arity }
}

pub fn conv(op: &Op, x: &Tensor, w: &Tensor) -> Tensor {
    kiln_ir::eval::eval_op(op, &[Some(x.clone()), Some(w.clone())], 1).unwrap().remove(0)
}

/// A lowered kernel in executable memory.
pub struct Compiled {
    _module: JITModule,
    func: unsafe extern "C" fn(*const *mut u8, u64, u64),
    pub kernel: Kernel,
    data: Vec<Option<*mut u8>>,
    pub out_shape: Vec<usize>,
}

fn out_type(node: &Node) -> OutType {
    let t = &node.outputs[0];
    OutType { dtype: t.dtype, shape: t.shape.concrete().expect("concrete output") }
}

fn operands<'a>(inputs: &'a [Option<Tensor>], consts: &[bool]) -> Vec<Option<Operand<'a>>> {
    inputs
        .iter()
        .zip(consts)
        .map(|(t, &c)| {
            t.as_ref().map(|t| Operand { dtype: t.dtype(), shape: t.shape(), value: c.then_some(t) })
        })
        .collect()
}

fn module() -> JITModule {
    let isa = kiln_cpu::codegen::host_isa().unwrap();
    JITModule::new(JITBuilder::with_isa(isa, cranelift_module::default_libcall_names()))
}

/// Lowers `node` into a fresh module; `None` when the GEMM lowering declines it.
pub fn compile(node: &Node, inputs: &[Option<Tensor>], consts: &[bool], kernels: Kernels) -> Option<Compiled> {
    let mut module = module();
    let micro = match kernels {
        Kernels::Native if GemmKernel::detect() == GemmKernel::Avx2Fma => Some(
            define_microkernels(&mut module, "t_sgemm", Linkage::Local, Isa::X86_64Avx2Fma).unwrap(),
        ),
        _ => None,
    };
    let ops = operands(inputs, consts);
    let out = out_type(node);
    let kernel = {
        let mut ctx = LowerCtx::new(&mut module, "t", micro);
        match lower_node(&mut ctx, node, &ops, std::slice::from_ref(&out)) {
            Ok(k) => k,
            Err(kiln_cpu::lower::LowerError::Unsupported(_)) => return None,
            Err(e) => panic!("{e}"),
        }
    };
    module.finalize_definitions().unwrap();
    let addr = module.get_finalized_function(kernel.func);
    // SAFETY: kernels have the lowering's ABI `fn(args, start, end)`.
    let func = unsafe { std::mem::transmute::<*const u8, unsafe extern "C" fn(*const *mut u8, u64, u64)>(addr) };
    let data = kernel
        .args
        .iter()
        .map(|a| match a {
            Arg::Data(id) => Some(module.get_finalized_data(*id).0 as *mut u8),
            _ => None,
        })
        .collect();
    Some(Compiled { _module: module, func, kernel, data, out_shape: out.shape })
}

pub fn lower_only(node: &Node, inputs: &[Option<Tensor>], consts: &[bool]) -> Option<Kernel> {
    compile(node, inputs, consts, Kernels::Native).map(|c| c.kernel)
}

impl Compiled {
    /// The argument addresses for `inputs` and `out`.
    pub fn args(&self, inputs: &[Option<Tensor>], out: &mut [f32]) -> Vec<*mut u8> {
        self.kernel
            .args
            .iter()
            .zip(&self.data)
            .map(|(a, d)| match a {
                Arg::Input(i) => {
                    inputs[*i].as_ref().unwrap().as_slice::<f32>().unwrap().as_ptr() as *mut u8
                }
                Arg::Output(_) => out.as_mut_ptr() as *mut u8,
                Arg::Data(_) => d.unwrap(),
            })
            .collect()
    }

    /// Calls the kernel over each range in turn.
    pub fn run(&self, inputs: &[Option<Tensor>], out: &mut [f32], ranges: &[Range<u64>]) {
        let args = self.args(inputs, out);
        for r in ranges {
            // SAFETY: the arguments match the kernel's list and hold the shapes it was
            // lowered for.
            unsafe { (self.func)(args.as_ptr(), r.start, r.end) }
        }
    }

    /// Runs units `0..units` split between two threads (halves).
    pub fn run_two_threads(&self, args: &[*mut u8]) {
        let (f, units) = (self.func as usize, self.kernel.units);
        let a = args.as_ptr() as usize;
        std::thread::scope(|s| {
            s.spawn(move || unsafe { call(f, a, 0, units / 2) });
            unsafe { call(f, a, units / 2, units) };
        });
    }

    pub fn run_all(&self, args: &[*mut u8]) {
        unsafe { call(self.func as usize, args.as_ptr() as usize, 0, self.kernel.units) }
    }
}

/// # Safety
/// `f` is a lowered kernel and `args` its argument list.
unsafe fn call(f: usize, args: usize, start: u64, end: u64) {
    let f = std::mem::transmute::<usize, unsafe extern "C" fn(*const *mut u8, u64, u64)>(f);
    f(args as *const *mut u8, start, end)
}

/// Lowers, runs over all units and over two halves, compares both with `ir::eval`.
pub fn check(node: &Node, inputs: &[Option<Tensor>], consts: &[bool], kernels: Kernels) {
    let want = kiln_ir::eval::eval_op(&node.op, inputs, 1).unwrap().remove(0);
    let want = want.as_slice::<f32>().unwrap();
    let c = compile(node, inputs, consts, kernels)
        .unwrap_or_else(|| panic!("{} was not lowered ({kernels:?})", node.op.name()));
    assert!(c.kernel.units > 0);
    let half = c.kernel.units / 2;
    let splits: [&[Range<u64>]; 2] = [&[0..c.kernel.units], &[half..c.kernel.units, 0..half]];
    for ranges in splits {
        let mut out = vec![f32::NAN; want.len()];
        c.run(inputs, &mut out, ranges);
        for (i, (&got, &w)) in out.iter().zip(want).enumerate() {
            assert!(
                (got - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "{} ({}, {kernels:?}, ranges {ranges:?}): element {i} of {:?} is {got}, want {w}",
                node.op.name(),
                c.kernel.kind,
                c.out_shape,
            );
        }
    }
}
