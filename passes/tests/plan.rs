//! The memory plan: every intermediate gets a slot, tensors live at the same time never
//! share bytes, and reuse makes the arena smaller than the intermediates' sum.

use kiln_ir::text::parse;
use kiln_ir::{Graph, Op, Value};
use kiln_passes::plan::{plan, plan_for_inputs, MemoryPlan, ALIGN};
use std::collections::{HashMap, HashSet};

/// Checks `p` against `g` from scratch: every intermediate of known size (and nothing else) has one slot
/// with its size and lifetime, slots are aligned and inside the arena, and no two slots
/// whose lifetimes overlap share a byte.
fn check(g: &Graph, p: &MemoryPlan, bytes: impl Fn(Value) -> usize) {
    assert_eq!(p.order, g.topo_order().unwrap());
    let pos: HashMap<_, _> = p.order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let outputs: HashSet<Value> = g.outputs.iter().map(|(_, v)| *v).collect();
    let mut want = Vec::new();
    for &n in &p.order {
        let node = g.node(n);
        if matches!(node.op, Op::Input | Op::Const { .. }) {
            continue;
        }
        for k in 0..node.outputs.len() {
            let v = Value::new(n, k);
            if !outputs.contains(&v) && !p.dynamic.contains(&v) {
                let last = g
                    .uses_of(v)
                    .iter()
                    .map(|(c, _)| pos[c])
                    .max()
                    .unwrap_or(pos[&n]);
                want.push((v, bytes(v), (pos[&n], last)));
            }
        }
    }
    let mut got: Vec<_> = p.slots.iter().map(|s| (s.value, s.bytes, s.live)).collect();
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "one slot per intermediate, with its size and lifetime"
    );
    assert_eq!(
        p.total_bytes,
        want.iter()
            .map(|w| w.1.div_ceil(ALIGN) * ALIGN)
            .sum::<usize>()
    );
    for s in &p.slots {
        assert_eq!(s.offset % ALIGN, 0);
        assert!(s.offset + s.bytes <= p.arena_bytes);
    }
    for (i, a) in p.slots.iter().enumerate() {
        for b in &p.slots[i + 1..] {
            let live_together = a.live.0 <= b.live.1 && b.live.0 <= a.live.1;
            let share_bytes = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
            assert!(
                !(live_together && share_bytes),
                "{a:?} and {b:?} are live together and overlap"
            );
        }
    }
    assert!(p.arena_bytes <= p.total_bytes);
}

fn known_bytes(g: &Graph) -> impl Fn(Value) -> usize + '_ {
    |v| g.value_type(v).shape.numel().unwrap() * g.value_type(v).dtype.size()
}

#[test]
fn a_chain_ping_pongs_between_two_slots() {
    let text = r#"graph g(%x: f32[16]) -> (%y: f32[16]) {
  %0 = relu(%x) : f32[16]
  %1 = neg(%0) : f32[16]
  %2 = exp(%1) : f32[16]
  %3 = neg(%2) : f32[16]
  %4 = relu(%3) : f32[16]
  return %4
}"#;
    let g = parse(text, None).unwrap();
    let p = plan(&g).unwrap();
    check(&g, &p, known_bytes(&g));
    assert_eq!(p.slots.len(), 4);
    assert_eq!(p.total_bytes, 4 * 64);
    // A node's input and output are live together; nothing else is.
    assert_eq!(p.arena_bytes, 2 * 64);
}

#[test]
fn branches_keep_a_value_alive_until_its_last_reader() {
    // %0 is read at the end, so it holds its slot throughout; the big %1 and %2 take turns.
    let text = r#"graph g(%x: f32[4,16]) -> (%y: f32[4,16]) {
  @axes = i64[1] [0]
  %0 = relu(%x) : f32[4,16]
  %1 = exp(%0) : f32[4,16]
  %2 = reduce(%1, @axes) {kind=sum, keepdims=true, noop_with_empty_axes=false} : f32[1,16]
  %3 = neg(%2) : f32[1,16]
  %4 = exp(%3) : f32[1,16]
  %5 = mul(%0, %4) : f32[4,16]
  return %5
}"#;
    let g = parse(text, None).unwrap();
    let p = plan(&g).unwrap();
    check(&g, &p, known_bytes(&g));
    assert_eq!(p.total_bytes, 256 + 256 + 64 * 3);
    assert_eq!(p.arena_bytes, 256 + 256 + 64);
    let s0 = p
        .slot(Value::new(
            g.inputs_of(g.outputs[0].1.node)[0].unwrap().node,
            0,
        ))
        .unwrap();
    assert_eq!(s0.live.1, p.order.len() - 1, "read by the last node");
}

#[test]
fn symbolic_sizes_plan_once_the_inputs_are_bound() {
    // The reshape's target shape comes from a Shape op: only known once N is.
    let text = r#"graph g(%x: f32[N,4]) -> (%y: f32[*]) {
  %0 = relu(%x) : f32[N,4]
  %1 = shape(%0) {start=0} : i64[2]
  %2 = reshape(%0, %1) {allowzero=false} : f32[*]
  %3 = neg(%2) : f32[*]
  %4 = exp(%3) : f32[*]
  return %4
}"#;
    let g = parse(text, None).unwrap();
    kiln_ir::verify(&g).unwrap();
    assert!(plan(&g).is_none());
    let p = plan_for_inputs(&g, &[vec![3, 4]]).unwrap();
    let types = kiln_passes::plan::concrete_types(&g, &[vec![3, 4]]).unwrap();
    check(&g, &p, |v| {
        types[&v].shape.numel().unwrap() * types[&v].dtype.size()
    });
    // relu, reshape and neg outputs are 48 bytes, the shape 16: a 64-byte slot each.
    assert_eq!(p.total_bytes, 4 * 64);
    assert_eq!(
        p.slot(Value::new(g.outputs[0].1.node, 0)),
        None,
        "a graph output has its own buffer"
    );
    let e = plan_for_inputs(&g, &[vec![3, 5]]).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
}

#[test]
fn fused_kernels_are_planned_with_their_bodies_bound() {
    let text = r#"graph g(%x: f32[N,4]) -> (%y: f32[N,4]) {
  @axis = i64[] [1]
  %0 = relu(%x) : f32[N,4]
  %1 = neg(%0) : f32[N,4]
  %2 = cumsum(%1, @axis) {exclusive=false, reverse=false} : f32[N,4]
  %3 = exp(%2) : f32[N,4]
  return %3
}"#;
    let mut g = parse(text, None).unwrap();
    kiln_passes::Pass::run(&kiln_passes::fusion::Fusion, &mut g).unwrap();
    let p = plan_for_inputs(&g, &[vec![2, 4]]).unwrap();
    // Two intermediates: the relu+neg kernel's output and the cumsum's, 2×4 f32 each.
    assert_eq!(p.slots.len(), 2);
    assert_eq!(
        p.slots.iter().map(|s| s.bytes).collect::<Vec<_>>(),
        [32, 32]
    );
}

#[test]
fn small_cnn_reuses_its_arena_before_and_after_fusion() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/models/small_cnn/model.onnx"
    );
    let mut g = kiln_bridges::onnx::load(std::path::Path::new(path)).unwrap();
    let p = plan(&g).unwrap();
    check(&g, &p, known_bytes(&g));
    assert!(
        p.arena_bytes < p.total_bytes,
        "{} vs {}",
        p.arena_bytes,
        p.total_bytes
    );
    kiln_passes::optimize(&mut g, &kiln_passes::Options::default()).unwrap();
    let fused = plan(&g).unwrap();
    check(&g, &fused, known_bytes(&g));
    assert!(
        fused.total_bytes < p.total_bytes,
        "fusion keeps fewer intermediates"
    );
}

#[test]
fn sizes_only_the_data_tells_are_left_to_run_time() {
    let text = r#"graph g(%x: f32[N,3]) -> (%y: f32[2,?]) {
  %0 = relu(%x) : f32[N,3]
  %1 = non_zero(%0) : i64[2,?]
  %2 = cast(%1) {to=f32} : f32[2,?]
  %3 = neg(%2) : f32[2,?]
  return %3
}"#;
    let g = parse(text, None).unwrap();
    kiln_ir::verify(&g).unwrap();
    let p = plan_for_inputs(&g, &[vec![5, 3]]).unwrap();
    assert_eq!(p.slots.len(), 1, "the relu's 5×3 f32");
    assert_eq!(p.slots[0].bytes, 60);
    assert_eq!(p.dynamic.len(), 2, "non_zero's and the cast's outputs");
    let types = kiln_passes::plan::concrete_types(&g, &[vec![5, 3]]).unwrap();
    check(&g, &p, |v| types[&v].shape.numel().unwrap() * 4);
}
