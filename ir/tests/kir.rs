//! The saved form: model.kir + model.kir.bin, bit-identical on load.

use kiln_ir::half::{bf16, f16};
use kiln_ir::kir::{bin_path, load, save};
use kiln_ir::text::{print, Weights};
use kiln_ir::*;
use std::path::PathBuf;

/// A fresh directory for one test (std only: no temp-dir crate).
fn temp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-kir-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn t<T: Storable>(v: Vec<T>) -> Tensor {
    Tensor::new(vec![v.len()], v).unwrap()
}

/// Constants of every dtype, large enough to go to the .bin, plus small inline ones and
/// a nested graph with weights of its own.
fn weights_graph(with_nan: bool) -> Graph {
    let mut g = Graph::new("weights");
    let x = g.add_input(
        "x",
        TensorType::new(DType::F32, vec![Dim::Sym("N".into()), Dim::Known(16)]),
    );
    let odd = |i: usize| ((i * 7919) % 1000) as f32 / 7.0 - 50.0;
    let mut f32v: Vec<f32> = (0..100).map(odd).collect();
    f32v[3] = -0.0;
    f32v[4] = f32::INFINITY;
    if with_nan {
        f32v[5] = f32::from_bits(0x7fc0_beef);
        f32v[6] = f32::from_bits(0xff80_0001);
    }
    // f16 and bf16 NaNs with payloads, or infinities when NaN is not wanted.
    let (h, b) = if with_nan { (0x7e01, 0xffc1) } else { (0x7c00, 0xff80) };
    let consts = vec![
        ("f32", t(f32v)),
        ("f64", t((0..33).map(|i| (i as f64).sqrt() * 1e-300).collect())),
        (
            "f16",
            t((0..17)
                .map(|i| f16::from_f32(odd(i)))
                .chain([f16::from_bits(h), f16::NEG_INFINITY])
                .collect()),
        ),
        (
            "bf16",
            t((0..17)
                .map(|i| bf16::from_f32(odd(i)))
                .chain([bf16::from_bits(b)])
                .collect()),
        ),
        ("bool", t((0..13).map(|i| i % 3 == 0).collect())),
        ("i8", t((0..9).map(|i| (i as i8).wrapping_mul(37)).collect::<Vec<i8>>())),
        ("i16", t((0..9).map(|i| (i as i16) * -3001).collect::<Vec<i16>>())),
        ("i32", t(vec![i32::MIN, -1, 0, 1, i32::MAX, 5, 6, 7, 8])),
        ("i64", t(vec![i64::MIN, -1, 0, 1, i64::MAX, 5, 6, 7, 8, 9])),
        ("u8", t((0..9).map(|i| (i * 31) as u8).collect::<Vec<u8>>())),
        ("u16", t((0..9).map(|i| (i * 7001) as u16).collect::<Vec<u16>>())),
        ("u32", t((0..9).map(|i| u32::MAX - i).collect::<Vec<u32>>())),
        ("u64", t((0..9).map(|i| u64::MAX - i).collect::<Vec<u64>>())),
        ("small", t(vec![1i64, 2, 3])),
        (
            "matrix",
            Tensor::new(vec![16, 16], (0..256).map(|i| i as f32).collect::<Vec<f32>>()).unwrap(),
        ),
    ];
    for (name, value) in consts {
        let v = g.add_const(name, value);
        g.add_output(name, v);
    }
    let m = g.nodes.node_indices().find(|&n| g.node(n).name == "matrix").unwrap();
    let y = g.add_node_typed(
        Op::MatMul,
        "mm",
        &[Some(x), Some(m.into())],
        vec![TensorType::new(DType::F32, vec![Dim::Sym("N".into()), Dim::Known(16)])],
    );

    let mut then_g = Graph::new("then");
    let tx = then_g.add_input("x", TensorType::known(DType::F32, &[16]));
    let bias = then_g.add_const(
        "bias",
        Tensor::new(vec![16], (0..16).map(|i| i as f32 * 0.25).collect::<Vec<f32>>()).unwrap(),
    );
    let ty = then_g.add_node_typed(
        Op::Binary(BinaryOp::Add),
        "add",
        &[Some(tx), Some(bias)],
        vec![TensorType::known(DType::F32, &[16])],
    );
    then_g.add_output("y", ty.into());
    let mut else_g = Graph::new("else");
    let ex = else_g.add_input("x", TensorType::known(DType::F32, &[16]));
    else_g.add_output("y", ex);
    let c = g.add_input("c", TensorType::known(DType::Bool, &[]));
    let v = g.add_input("v", TensorType::known(DType::F32, &[16]));
    let r = g.add_node_typed(
        Op::If {
            then_branch: Box::new(then_g),
            else_branch: Box::new(else_g),
        },
        "if",
        &[Some(c), Some(v)],
        vec![TensorType::known(DType::F32, &[16])],
    );
    g.add_output("y", y.into());
    g.add_output("r", r.into());
    g
}

/// Every constant's bytes in topological order, nested graphs included.
fn const_bytes(g: &Graph) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for n in g.topo_order().unwrap() {
        let node = g.node(n);
        if let Op::Const { value } = &node.op {
            out.push((node.name.clone(), value.to_le_bytes()));
        }
        for s in node.op.subgraphs() {
            out.extend(const_bytes(s));
        }
    }
    out
}

#[test]
fn load_of_save_is_identical() {
    let dir = temp_dir("identical");
    let path = dir.join("model.kir");
    let g = weights_graph(false);
    save(&g, &path).unwrap();
    assert!(bin_path(&path).ends_with("model.kir.bin"));
    let back = load(&path).unwrap();
    assert!(back == g);
    assert_eq!(const_bytes(&back), const_bytes(&g));
    assert_eq!(print(&back, Weights::Inline), print(&g, Weights::Inline));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn nans_and_signs_survive_bit_for_bit() {
    let dir = temp_dir("nans");
    let path = dir.join("model.kir");
    let g = weights_graph(true);
    save(&g, &path).unwrap();
    let back = load(&path).unwrap();
    // NaN != NaN, so compare bytes and the exact text instead of `==`.
    assert_eq!(const_bytes(&back), const_bytes(&g));
    assert_eq!(print(&back, Weights::Inline), print(&g, Weights::Inline));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bin_is_aligned_little_endian_and_referenced() {
    let dir = temp_dir("aligned");
    let path = dir.join("m.kir");
    let g = weights_graph(false);
    save(&g, &path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let bin = std::fs::read(bin_path(&path)).unwrap();
    // Small constants stay in the text; large ones are bin(offset, nbytes) with aligned offsets.
    assert!(text.contains("@small = i64[3] [1,2,3]"), "{text}");
    let mut refs = 0;
    for part in text.split("bin(").skip(1) {
        let inner = &part[..part.find(')').unwrap()];
        let (off, len) = inner.split_once(", ").unwrap();
        let (off, len): (usize, usize) = (off.parse().unwrap(), len.parse().unwrap());
        assert_eq!(off % 64, 0, "{inner}");
        assert!(off + len <= bin.len());
        refs += 1;
    }
    assert_eq!(refs, 15, "{text}"); // 14 large top-level constants and the nested bias
                                    // The f32 weights start at 0, little-endian.
    assert!(text.contains("@f32 = f32[100] bin(0, 400)"), "{text}");
    assert_eq!(&bin[0..4], &(-50.0f32).to_le_bytes());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn errors_name_the_file() {
    let dir = temp_dir("errors");
    let path = dir.join("model.kir");
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("model.kir"), "{e}");

    save(&weights_graph(false), &path).unwrap();
    // A truncated .bin: the reference past its end is reported with the file's name.
    let bin = std::fs::read(bin_path(&path)).unwrap();
    std::fs::write(bin_path(&path), &bin[..bin.len() / 2]).unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("model.kir:") && e.contains("lies outside the .bin"), "{e}");

    // No .bin at all.
    std::fs::remove_file(bin_path(&path)).unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("model.kir.bin does not exist"), "{e}");

    // Not UTF-8.
    std::fs::write(&path, b"graph g() -> () {\xff}").unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("model.kir: not UTF-8"), "{e}");

    // Saving into a directory that does not exist.
    let e = save(&weights_graph(false), &dir.join("nowhere/model.kir"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere/model.kir"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}
