//! NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss over scores `[N, C, d1, …]` and
//! targets `[N, d1, …]`. With reduction `none` each output element is its own target's
//! loss; `sum` and `mean` are one work-item walking every target in eval's order (a
//! sequential f64 sum, so the result matches `ir::eval` bit for bit where the device has
//! fp64). SoftmaxCrossEntropyLoss's log-probabilities are the lane's log-softmax over C,
//! recomputed where needed rather than stored: a kernel has no intermediate buffers.
//! A target outside [0, C) that is not `ignore_index` is clamped (eval reports an error).

use super::{delinearize, dims, Body, Gen};
use kiln_ir::{LossReduction, NodeId, Op, Value};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::NegativeLogLikelihoodLoss { .. } | Op::SoftmaxCrossEntropyLoss { .. })
}

pub fn body(g: &Gen, n: NodeId, k: usize, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    Some(body_inner(g, n, op, k, shape))
}

struct Loss {
    x: Value,
    xs: Vec<usize>,
    target: Value,
    weight: Option<Value>,
    ignore: Option<i64>,
    softmax: bool,
    m: &'static str,
}

impl Loss {
    /// The scores' coordinates for the target element at `t` (`[n, d1, …]`) and class `c`.
    fn x_coords(&self, t: &[String], c: &str) -> Vec<String> {
        let mut v = vec![t[0].clone(), c.to_string()];
        v.extend(t[1..].iter().cloned());
        v
    }

    /// Statements declaring `lp` as the log-probability of class `c` at target position
    /// `t`: the score itself for nll_loss, the lane's log-softmax for the cross entropy
    /// (computed as `ir::eval`'s softmax_lanes: the max shift, 0 when not finite).
    fn log_prob(&self, g: &Gen, t: &[String], c: &str) -> String {
        let m = self.m;
        let me = format!("(({m}){})", g.at(self.x, &self.x_coords(t, c)));
        if !self.softmax {
            return format!("{m} lp = {me};");
        }
        let at_j = format!("(({m}){})", g.at(self.x, &self.x_coords(t, "j")));
        let classes = self.xs[1];
        format!(
            "{m} mx = -INFINITY; for (long j = 0; j < {classes}L; j++) mx = fmax(mx, {at_j});\n  if (!isfinite(mx)) mx = 0;\n  {m} s = 0; for (long j = 0; j < {classes}L; j++) s += exp({at_j} - mx);\n  {m} lp = {me} - mx - log(s);"
        )
    }

    /// Statements setting `l` (the loss) and `w` (its weight, 0 when ignored) for the
    /// target element at `t`.
    fn element(&self, g: &Gen, t: &[String]) -> String {
        let m = self.m;
        let classes = self.xs[1];
        let w = match self.weight {
            Some(wv) => format!("(({m}){})", g.at(wv, &["cls".to_string()])),
            None => "1".into(),
        };
        let skip = match self.ignore {
            Some(i) => format!("cls != {i}L"),
            None => "1".into(),
        };
        format!(
            "{{ long cls = (long){tgt};\n  if ({skip}) {{ cls = cls < 0 ? 0 : (cls >= {classes}L ? {last}L : cls);\n  {lp}\n  w = {w}; l = -lp * w; }} }}",
            tgt = g.at(self.target, t),
            last = classes - 1,
            lp = self.log_prob(g, t, "cls"),
        )
    }
}

fn body_inner(g: &Gen, n: NodeId, op: &Op, k: usize, shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    let input = |i: usize| ins.get(i).copied().flatten();
    let x = input(0).ok_or("input 0 (the scores) is missing")?;
    let target = input(1).ok_or("input 1 (the target) is missing")?;
    let (reduction, ignore, softmax) = match op {
        Op::NegativeLogLikelihoodLoss { reduction, ignore_index } => (*reduction, *ignore_index, false),
        Op::SoftmaxCrossEntropyLoss { reduction, ignore_index } => (*reduction, *ignore_index, true),
        _ => return Err("not a loss".into()),
    };
    let xd = g.dtype(x);
    if !xd.is_float() {
        return Err(format!("a loss over {xd} scores"));
    }
    let xs = dims(g.graph, x)?;
    let ts = dims(g.graph, target)?;
    if xs.len() < 2 || xs[1] == 0 {
        return Err(format!("the scores must have shape [N, C, …] with C > 0, found {xs:?}"));
    }
    let want: Vec<usize> = std::iter::once(xs[0]).chain(xs[2..].iter().copied()).collect();
    if ts != want {
        return Err(format!("the target has shape {ts:?}, the scores {xs:?} need {want:?}"));
    }
    let weight = input(2);
    if let Some(w) = weight {
        if dims(g.graph, w)? != [xs[1]] {
            return Err(format!("the weight must have shape [{}]", xs[1]));
        }
    }
    let out_ty = super::ctype(g.graph.node(n).outputs[k].dtype).ok_or("half tensors")?;
    let loss = Loss { x, xs, target, weight, ignore, softmax, m: g.math(xd) };
    let m = loss.m;
    if k == 1 {
        // The cross entropy's second output: the log-probabilities, shaped as the scores.
        let t: Vec<String> = std::iter::once("i0".to_string()).chain((2..shape.len()).map(|j| format!("i{j}"))).collect();
        return Ok(format!("  {}\n  return ({out_ty})lp;", loss.log_prob(g, &t, "i1")));
    }
    match reduction {
        LossReduction::None => {
            let t: Vec<String> = (0..shape.len()).map(|j| format!("i{j}")).collect();
            Ok(format!("  {m} l = 0, w = 0;\n  {}\n  (void)w; return ({out_ty})l;", loss.element(g, &t)))
        }
        LossReduction::Sum | LossReduction::Mean => {
            let count: usize = ts.iter().product();
            let t: Vec<String> = (0..ts.len()).map(|j| format!("t{j}")).collect();
            // Rust's f64 sum starts from -0.0; so does this one.
            let fin = if reduction == LossReduction::Mean { "sum / tw" } else { "sum" };
            Ok(format!(
                "  {m} sum = -0.0, tw = 0;\n  for (long q = 0; q < {count}L; q++) {{ {}\n  {m} l = 0, w = 0;\n  {}\n  sum += l; tw += w; }}\n  return ({out_ty})({fin});",
                delinearize(&ts, "q", "t"),
                loss.element(g, &t)
            ))
        }
    }
}
