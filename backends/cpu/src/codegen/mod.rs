//! Cranelift code generation for elementwise kernels.
//!
//! An elementwise expression DAG (a fused kernel's body, or one node wrapped as a graph)
//! compiles, for one concrete set of input shapes, into a loop nest with an f32x4 inner
//! loop ([`ElementwiseKernel::compile`]); ops or dtypes it does not cover give
//! [`Unsupported`], and the caller runs `ir::eval` instead.
//!
//! | file | what |
//! |---|---|
//! | `plan.rs` | the DAG as a list of expressions, the operands, the vector/scalar choice |
//! | `broadcast.rs` | numpy broadcasting and the simplified loop layout |
//! | `elementwise.rs` | the loop nest in CLIF, generic over `cranelift_module::Module` |
//! | `ops.rs` | each op's CLIF |
//! | `math.rs` | exp, log, tanh, sigmoid, erf… as polynomials, with measured accuracy |
//! | `emit.rs` | helpers that emit the same code for one f32 or four |
//! | `jit.rs` | the host ISA, the JIT module, the entry point |

mod broadcast;
mod elementwise;
pub(crate) mod emit;
mod jit;
pub(crate) mod math;
mod ops;
pub(crate) mod plan;

pub use broadcast::{broadcast, Layout};
pub use elementwise::{define_kernel, signature};
pub use jit::{host_isa, KernelFn};
pub use plan::Plan;
pub(crate) use plan::{elementwise as covers_op, supported_dtype};

use crate::gemm::threads::Pool;
use jit::JitCode;
use kiln_ir::{DType, Data, Graph, IrError, Tensor};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Why a kernel cannot be generated (an op, a dtype or a shape the code generator does
/// not cover); the caller falls back to `ir::eval`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub reason: String,
}

impl Unsupported {
    pub fn new(reason: impl Into<String>) -> Unsupported {
        Unsupported {
            reason: reason.into(),
        }
    }

    pub fn at(node: &str, reason: impl fmt::Display) -> Unsupported {
        Unsupported::new(format!("node {node}: {reason}"))
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no generated code: {}", self.reason)
    }
}

impl std::error::Error for Unsupported {}

/// Above this many output elements a call splits over the thread pool; below, the wake-up
/// costs more than the second core saves.
const PARALLEL_ELEMENTS: usize = 1 << 16;

/// A compiled elementwise kernel for one set of input shapes. Cheap to clone (the code is
/// shared), `Send + Sync`, and reentrant: any number of threads may run it at once.
#[derive(Clone)]
pub struct ElementwiseKernel {
    plan: Arc<Plan>,
    code: Arc<JitCode>,
}

impl fmt::Debug for ElementwiseKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElementwiseKernel")
            .field("shape", &self.plan.shape)
            .field("loops", &self.plan.layout.dims)
            .field("vector", &self.plan.vector)
            .finish()
    }
}

impl ElementwiseKernel {
    /// Compiles `body` (Input, Const and elementwise nodes) for inputs of `input_shapes`.
    pub fn compile(
        body: &Graph,
        input_shapes: &[Vec<usize>],
    ) -> Result<ElementwiseKernel, Unsupported> {
        let plan = Plan::new(body, input_shapes)?;
        let code = JitCode::compile(&plan)?;
        Ok(ElementwiseKernel {
            plan: Arc::new(plan),
            code: Arc::new(code),
        })
    }

    /// The shape of every output.
    pub fn output_shape(&self) -> &[usize] {
        &self.plan.shape
    }

    pub fn output_dtypes(&self) -> Vec<DType> {
        self.plan
            .outputs
            .iter()
            .map(|&e| self.plan.exprs[e].dtype)
            .collect()
    }

    /// The dtype and shape each input must have.
    pub fn input_types(&self) -> Vec<(DType, Vec<usize>)> {
        self.plan
            .operands
            .iter()
            .filter(|o| o.constant.is_none())
            .map(|o| (o.dtype, o.shape.clone()))
            .collect()
    }

    /// True when the inner loop runs on f32x4 vectors.
    pub fn is_vectorised(&self) -> bool {
        self.plan.vector
    }

    /// Runs the kernel on tensors of the compiled dtypes and shapes, over the process-wide
    /// pool; returns new outputs.
    pub fn run(&self, inputs: &[&Tensor]) -> kiln_ir::Result<Vec<Tensor>> {
        self.run_on(Some(Pool::global()), inputs)
    }

    /// [`Self::run`] over `pool` (`None`: the calling thread alone): a compiled model's
    /// kernels run on the threads it was compiled for.
    pub fn run_on(&self, pool: Option<&Pool>, inputs: &[&Tensor]) -> kiln_ir::Result<Vec<Tensor>> {
        let types = self.input_types();
        if inputs.len() != types.len() {
            return Err(IrError::msg(format!(
                "the kernel takes {} inputs, {} were given",
                types.len(),
                inputs.len()
            )));
        }
        let mut ptrs: Vec<*const u8> = Vec::new();
        for (i, (t, (dtype, shape))) in inputs.iter().zip(&types).enumerate() {
            if t.dtype() != *dtype || t.shape() != &shape[..] {
                return Err(IrError::msg(format!(
                    "input {i} is {} {:?}; the kernel was compiled for {dtype} {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            ptrs.push(tensor_ptr(t)?);
        }
        let n = self.plan.layout.len();
        // f32 outputs (nearly all) are left unfilled: the kernel writes every element, and
        // filling them with zeros first was a second pass over memory.
        let mut outs: Vec<Result<Vec<f32>, Data>> = self
            .output_dtypes()
            .iter()
            .map(|&d| match d {
                DType::F32 => Ok(Vec::with_capacity(n)),
                _ => Err(Data::zeros(d, n)),
            })
            .collect();
        let out_ptrs: Vec<*mut u8> = outs
            .iter_mut()
            .map(|o| match o {
                Ok(v) => v.as_mut_ptr() as *mut u8,
                Err(d) => data_ptr_mut(d),
            })
            .collect();
        // SAFETY: every pointer addresses a buffer of the dtype and element count (or, for
        // f32, capacity) the kernel was compiled for (checked above; outputs allocated
        // here), alive for the call.
        unsafe { self.run_raw(pool, &ptrs, &out_ptrs) };
        outs.into_iter()
            .map(|o| match o {
                Ok(mut v) => {
                    // SAFETY: `run_raw` wrote elements 0..n (every call range together).
                    unsafe { v.set_len(n) };
                    Tensor::new(self.plan.shape.clone(), v)
                }
                Err(d) => Tensor::from_data(self.plan.shape.clone(), d),
            })
            .collect()
    }

    /// Runs the kernel on little-endian element bytes (bool as one 0/1 byte), as an arena
    /// holds them: one slice per input, one per output, each exactly as long as its
    /// tensor.
    pub fn run_into(&self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) -> kiln_ir::Result<()> {
        let types = self.input_types();
        if inputs.len() != types.len() || outputs.len() != self.plan.outputs.len() {
            return Err(IrError::msg(format!(
                "the kernel takes {} inputs and {} outputs, {} and {} were given",
                types.len(),
                self.plan.outputs.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        for (i, (bytes, (dtype, shape))) in inputs.iter().zip(&types).enumerate() {
            let want = shape.iter().product::<usize>() * dtype.size();
            if bytes.len() != want {
                return Err(IrError::msg(format!(
                    "input {i} has {} bytes, {dtype} {shape:?} needs {want}",
                    bytes.len()
                )));
            }
        }
        let n = self.plan.layout.len();
        for (o, (bytes, dtype)) in outputs.iter().zip(self.output_dtypes()).enumerate() {
            if bytes.len() != n * dtype.size() {
                return Err(IrError::msg(format!(
                    "output {o} has {} bytes, {n} {dtype} elements need {}",
                    bytes.len(),
                    n * dtype.size()
                )));
            }
        }
        let ptrs: Vec<*const u8> = inputs.iter().map(|b| b.as_ptr()).collect();
        let out_ptrs: Vec<*mut u8> = outputs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        // SAFETY: lengths checked above; a bool input byte other than 0/1 reads as true,
        // and the kernel writes only 0/1 to bool outputs.
        unsafe { self.run_raw(Some(Pool::global()), &ptrs, &out_ptrs) };
        Ok(())
    }

    /// Runs the kernel on raw element pointers, splitting large outputs over `pool`.
    ///
    /// # Safety
    /// `inputs[i]` must point to a dense buffer of input i's dtype and shape, `outputs[o]`
    /// to one of output o's dtype and [`Self::output_shape`], not overlapping any input
    /// unless it is the very same buffer (in-place elementwise is fine).
    pub unsafe fn run_raw(&self, pool: Option<&Pool>, inputs: &[*const u8], outputs: &[*mut u8]) {
        let n = self.plan.layout.len();
        if n == 0 {
            return;
        }
        let mut args: Vec<usize> = Vec::new();
        let mut next_input = inputs.iter();
        for operand in &self.plan.operands {
            let ptr = match &operand.constant {
                Some(t) => data_ptr(t.data()),
                None => *next_input.next().expect("one pointer per input"),
            };
            args.push(ptr as usize);
        }
        args.extend(outputs.iter().map(|&p| p as usize));
        let entry = self.code.entry();
        let call = |start: usize, end: usize| {
            // SAFETY: the caller's contract; `args` lives until every call returns.
            unsafe { entry(args.as_ptr() as *const *mut u8, start as u64, end as u64) }
        };
        let pool = match pool {
            Some(pool) if n > PARALLEL_ELEMENTS && pool.threads() >= 2 => pool,
            _ => {
                call(0, n);
                return;
            }
        };
        let threads = pool.threads();
        // Chunk ends on a multiple of 16 elements, so each thread's rows start on a vector
        // boundary when rows are long.
        let bound = |t: usize| {
            if t == threads {
                n
            } else {
                (n * t / threads) & !15
            }
        };
        pool.run(&|t| call(bound(t), bound(t + 1)));
    }
}

#[allow(clippy::unnecessary_cast)] // a no-op for the u8 variant only
fn data_ptr(d: &Data) -> *const u8 {
    kiln_ir::with_data!(d, v, T => v.as_ptr() as *const u8)
}

/// The tensor's elements in place: `as_slice`, not `data()`, so a tensor that reads a
/// caller's buffer (`Tensor::from_shared`) is not copied first.
fn tensor_ptr(t: &Tensor) -> kiln_ir::Result<*const u8> {
    Ok(kiln_ir::with_dtype!(t.dtype(), T => t.as_slice::<T>()?.as_ptr() as *const u8))
}

#[allow(clippy::unnecessary_cast)] // a no-op for the u8 variant only
fn data_ptr_mut(d: &mut Data) -> *mut u8 {
    kiln_ir::with_data!(d, v, T => v.as_mut_ptr() as *mut u8)
}

type Compiled = Result<ElementwiseKernel, Unsupported>;

/// Kernels of one body, compiled per set of input shapes on first use.
pub struct KernelCache {
    body: Graph,
    kernels: Mutex<HashMap<Vec<Vec<usize>>, Compiled>>,
}

impl KernelCache {
    pub fn new(body: Graph) -> KernelCache {
        KernelCache {
            body,
            kernels: Mutex::new(HashMap::new()),
        }
    }

    /// The expression DAG the kernels compute.
    pub fn body(&self) -> &Graph {
        &self.body
    }

    /// The kernel for these input shapes (compiled now if it is the first time); a refusal
    /// is remembered too, so an unsupported body is analysed once.
    pub fn get(&self, input_shapes: &[Vec<usize>]) -> Result<ElementwiseKernel, Unsupported> {
        let mut kernels = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        kernels
            .entry(input_shapes.to_vec())
            .or_insert_with(|| ElementwiseKernel::compile(&self.body, input_shapes))
            .clone()
    }
}
