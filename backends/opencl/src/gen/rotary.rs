//! ONNX RotaryEmbedding: (x, cos_cache, sin_cache, position_ids?). Each element of a head
//! vector's first `rotary_embedding_dim` entries is its rotated pair's one side: with its
//! partner half a rotation away (x[j], x[j + d/2]) or, `interleaved`, its neighbour
//! (x[2j], x[2j + 1]); the rest pass through. Math in `M` as `ir::eval` computes in f64.
//!
//! A position id outside the cache is clamped to it (eval reports an error): the ids are
//! run-time values, the kernel cannot fail.

use super::{ctype, dims, Body, Gen};
use kiln_ir::{NodeId, Op};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::RotaryEmbedding { .. })
}

pub fn body(g: &Gen, n: NodeId, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    Some(body_inner(g, n, op, shape))
}

fn body_inner(g: &Gen, n: NodeId, op: &Op, shape: &[usize]) -> Body {
    let Op::RotaryEmbedding {
        interleaved,
        num_heads,
        rotary_embedding_dim,
    } = op
    else {
        return Err("not a rotary_embedding op".into());
    };
    let ins = g.graph.inputs_of(n);
    let input = |i: usize| ins.get(i).copied().flatten();
    let (x, cos, sin) = match (input(0), input(1), input(2)) {
        (Some(x), Some(c), Some(s)) => (x, c, s),
        _ => return Err("rotary_embedding needs x, cos_cache and sin_cache".into()),
    };
    let xd = g.dtype(x);
    for (v, what) in [(x, "x"), (cos, "cos_cache"), (sin, "sin_cache")] {
        let d = g.dtype(v);
        if !d.is_float() || ctype(d).is_none() {
            return Err(format!("{what} must be f32 or f64, found {d}"));
        }
    }
    let ty = ctype(xd).ok_or_else(|| format!("{xd} tensors"))?;
    let s = shape;
    let (batch, heads, seq, head) = match (s.len(), num_heads) {
        (4, _) => (s[0], s[1], s[2], s[3]),
        (3, Some(h)) => {
            let h = usize::try_from(*h)
                .map_err(|_| format!("num_heads must not be negative, found {h}"))?;
            if h == 0 || s[2] % h != 0 {
                return Err(format!(
                    "hidden size {} is not a multiple of num_heads {h}",
                    s[2]
                ));
            }
            (s[0], h, s[1], s[2] / h)
        }
        (3, None) => return Err("a 3-D input needs the num_heads attribute".into()),
        (r, _) => return Err(format!("x must have rank 3 or 4, found {r}")),
    };
    let _ = heads;
    let rot = if *rotary_embedding_dim == 0 {
        head
    } else {
        usize::try_from(*rotary_embedding_dim).map_err(|_| {
            format!("rotary_embedding_dim must not be negative, found {rotary_embedding_dim}")
        })?
    };
    if rot > head || rot % 2 != 0 {
        return Err(format!(
            "rotary_embedding_dim {rot} must be even and at most the head size {head}"
        ));
    }
    let half = rot / 2;
    let (cs, ss) = (dims(g.graph, cos)?, dims(g.graph, sin)?);
    if cs != ss {
        return Err(format!(
            "cos_cache {cs:?} and sin_cache {ss:?} differ in shape"
        ));
    }
    // The coordinates of the cache entry for (batch bt, position t, pair jj).
    let cache: Vec<String> = match input(3) {
        Some(p) => {
            if dims(g.graph, p)? != [batch, seq] {
                return Err(format!("position_ids must have shape [{batch}, {seq}]"));
            }
            if cs.len() != 2 || cs[1] != half || cs[0] == 0 {
                return Err(format!(
                    "with position_ids the caches must be [max_position, {half}], found {cs:?}"
                ));
            }
            let pid = g.at(p, &["bt".into(), "t".into()]);
            vec![
                format!("clamp((long){pid}, 0L, {}L)", cs[0] - 1),
                "jj".into(),
            ]
        }
        None => {
            if cs != [batch, seq, half] {
                return Err(format!("without position_ids the caches must be [{batch}, {seq}, {half}], found {cs:?}"));
            }
            vec!["bt".into(), "t".into(), "jj".into()]
        }
    };
    // The element's (batch, position, index in its head), and its coordinates with the last
    // one moved by `delta` (the partner shares the head vector).
    let (locate, last) = if s.len() == 4 {
        ("long bt = i0, t = i2, e = i3;".to_string(), "i3")
    } else {
        (format!("long bt = i0, t = i1, e = i2 % {head}L;"), "i2")
    };
    let r = s.len();
    let at_delta = |delta: &str| -> String {
        let c: Vec<String> = (0..r)
            .map(|j| {
                if j + 1 == r {
                    format!("{last} + ({delta})")
                } else {
                    format!("i{j}")
                }
            })
            .collect();
        g.at(x, &c)
    };
    let m = g.math(xd);
    let here = at_delta("0");
    // (pair index, partner offset, whether this is the pair's first element)
    let pair = if *interleaved {
        "long jj = e / 2; int first = (e % 2) == 0; long delta = first ? 1 : -1;".to_string()
    } else {
        format!("long jj = e < {half}L ? e : e - {half}L; int first = e < {half}L; long delta = first ? {half}L : -{half}L;")
    };
    Ok(format!(
        "  {locate}\n  if (e >= {rot}L) return {here};\n  {pair}\n  {m} c = ({m}){}, s = ({m}){};\n  {m} me = ({m}){here}, other = ({m}){};\n  return ({ty})(first ? c * me - s * other : s * other + c * me);",
        g.at(cos, &cache),
        g.at(sin, &cache),
        at_delta("delta"),
    ))
}
