//! kiln's framework-independent IR.
//!
//! ```
//! use kiln_ir::{Graph, Op, Tensor, TensorType, DType, UnaryOp};
//! let mut g = Graph::new("tiny");
//! let x = g.add_input("x", TensorType::known(DType::F32, &[3]));
//! let y = g.add1(Op::Unary(UnaryOp::Relu), "relu", &[x]).unwrap();
//! g.add_output("y", y);
//! kiln_ir::verify(&g).unwrap();
//! let out = kiln_ir::eval::run_graph(&g, &[Tensor::new(vec![3], vec![-1.0f32, 0.0, 2.0]).unwrap()]).unwrap();
//! assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0.0, 0.0, 2.0]);
//! ```

pub mod attr;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod graph;
pub mod infer;
pub mod kir;
pub mod op;
pub mod ops;
pub mod rewrite;
pub mod shape;
pub mod tensor;
pub mod text;
pub mod verify;

pub use half;
pub use dtype::{DType, Element};
pub use error::{IrError, Result};
pub use graph::{Edge, Graph, Node, NodeId, Value};
pub use op::*;
pub use shape::{Dim, Shape, TensorType};
pub use tensor::{Data, Storable, Tensor};
pub use ops::image::{resize_taps, AxisTaps, ResizeTaps};
pub use ops::nn::{conv_transpose_geometry, ConvTransposeGeometry};
pub use verify::verify;
