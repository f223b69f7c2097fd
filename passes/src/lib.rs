//! Graph-to-graph passes over the kiln IR: the pass manager and its standard pipelines,
//! each op's fusion pattern, and fp16 weight compression.
//!
//! ```
//! use kiln_passes::{optimize, Level, Options};
//! let text = "graph g(%x: f32[2]) -> (%y: f32[2]) {\n  input %x\n  %0 = relu(%x) : f32[2]\n  return %0\n}\n";
//! let mut g = kiln_ir::text::parse(text, None).unwrap();
//! let report = optimize(&mut g, &Options::level(Level::O2)).unwrap();
//! assert_eq!(report.level, Level::O2);
//! ```

pub mod classic;
pub mod egraph;
pub mod fp16;
pub mod layout;
pub mod fusion;
pub mod manager;
pub mod pattern;
mod pipelines;
pub mod plan;

pub use classic::{Cse, Dce, Decompose, Fold, ShapeFold, Simplify};
pub use egraph::EGraph;
pub use fusion::{Fusion, KernelView};
pub use manager::{op_count, optimize, Level, Options, Pass, PassStats, Pipeline, Report};
pub use pattern::{pattern, Pattern};
pub use plan::MemoryPlan;
