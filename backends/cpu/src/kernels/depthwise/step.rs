//! The step for a depthwise convolution with constant weights, its epilogue (bias,
//! residual, clip) and optionally an activation that reads its input twice (swish, hard
//! swish), all applied to each block of outputs before its one store. The output is
//! written once into fresh memory, with no zero fill first. (`kernels::conv` keeps a
//! depthwise path for weights known only at run time.)

use super::super::activation::Activation;
use super::super::epilogue::Epilogue;
use super::super::im2col::{Attrs, Geometry};
use crate::device::Ctx;
use crate::program::Arg;
use kiln_ir::{AutoPad, DType, Graph, NodeId, Op, Result, Tensor, Value};
use std::collections::HashMap;

pub(crate) struct Depthwise {
    auto_pad: AutoPad,
    dilations: Vec<i64>,
    group: usize,
    kernel_shape: Vec<i64>,
    pads: Vec<i64>,
    strides: Vec<i64>,
    /// Step inputs of x, w and b.
    x: usize,
    w: usize,
    b: Option<usize>,
    epi: Epilogue,
    act: Option<Activation>,
}

/// Whether node `n` is a 2-D f32 convolution with one input and one output channel per
/// group, its weights known at compile time.
pub(crate) fn is_depthwise(graph: &Graph, n: NodeId, known: &HashMap<Value, Tensor>) -> bool {
    let node = graph.node(n);
    let Op::Conv { group, .. } = &node.op else {
        return false;
    };
    let f32_out = node.outputs.len() == 1
        && node.outputs[0].dtype == DType::F32
        && node.outputs[0].shape.rank() == Some(4);
    let w = graph
        .inputs_of(n)
        .get(1)
        .copied()
        .flatten()
        .and_then(|v| known.get(&v));
    f32_out
        && w.is_some_and(|w| w.rank() == 4 && w.shape()[1] == 1 && w.shape()[0] as i64 == *group)
}

fn input_index(arg: Option<&Arg>) -> Option<usize> {
    match arg {
        Some(Arg::Input(i)) => Some(*i),
        _ => None,
    }
}

impl Depthwise {
    pub fn new(
        graph: &Graph,
        n: NodeId,
        args: &[Arg],
        epi: Epilogue,
        act: Option<Activation>,
    ) -> Option<Depthwise> {
        let Op::Conv {
            auto_pad,
            dilations,
            group,
            kernel_shape,
            pads,
            strides,
        } = &graph.node(n).op
        else {
            return None;
        };
        Some(Depthwise {
            auto_pad: *auto_pad,
            dilations: dilations.clone(),
            group: usize::try_from(*group).ok()?,
            kernel_shape: kernel_shape.clone(),
            pads: pads.clone(),
            strides: strides.clone(),
            x: input_index(args.first())?,
            w: input_index(args.get(1))?,
            b: match args.get(2) {
                None | Some(Arg::Absent) => None,
                a => Some(input_index(a)?),
            },
            epi,
            act,
        })
    }

    /// The output, or `None` for inputs this kernel does not take (the step then replays
    /// its chain through `ir::eval`).
    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.get(self.x)?.as_ref()?;
        let w = args.get(self.w)?.as_ref()?;
        let (xv, wv) = (x.as_slice::<f32>().ok()?, w.as_slice::<f32>().ok()?);
        if x.rank() != 4 || w.rank() != 4 {
            return None;
        }
        let attrs = Attrs {
            auto_pad: self.auto_pad,
            dilations: &self.dilations,
            kernel_shape: &self.kernel_shape,
            pads: &self.pads,
            strides: &self.strides,
        };
        let g = Geometry::new(&attrs, x.shape(), w.shape(), self.group)?;
        let (batch, m) = (x.shape()[0], w.shape()[0]);
        if g.c != 1 || m != self.group {
            return None;
        }
        let out_shape = vec![batch, m, g.oh, g.ow];
        let mut bias = match self.b {
            None => None,
            Some(i) => {
                let bv = args.get(i)?.as_ref()?.as_slice::<f32>().ok()?;
                if bv.len() != m {
                    return None;
                }
                Some(bv.to_vec())
            }
        };
        if let Some(extra) = &self.epi.bias {
            if extra.len() != m {
                return None;
            }
            let b = bias.get_or_insert_with(|| vec![0.0; m]);
            b.iter_mut().zip(extra).for_each(|(x, y)| *x += y);
        }
        let residual = match self.epi.residual {
            None => None,
            Some(i) => {
                let r = args.get(i)?.as_ref()?;
                if r.shape() != out_shape.as_slice() {
                    return None;
                }
                Some(r.as_slice::<f32>().ok()?)
            }
        };
        let numel = batch.checked_mul(m)?.checked_mul(g.p())?;
        if xv.len() != batch * m * g.h * g.w || wv.len() != m * g.kh * g.kw {
            return None;
        }
        let mut out: Vec<f32> = Vec::with_capacity(numel);
        let post = super::Post {
            residual,
            clip: self.epi.clip,
            act: self.act.as_ref(),
        };
        // SAFETY: `out` has room for all `numel` = batch·m·p outputs, each written once
        // by `run_into` before `set_len`.
        unsafe {
            super::run_into(
                ctx,
                &g,
                batch,
                m,
                xv,
                wv,
                bias.as_deref(),
                &post,
                out.as_mut_ptr(),
            );
            out.set_len(numel);
        }
        Some(Tensor::new(out_shape, out))
    }
}
