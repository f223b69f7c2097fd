//! The pass manager: a pass is `Graph → Graph` with a name; a [`Pipeline`] runs passes in
//! order, verifies the graph after each one when asked, and records each pass's statistics.

use kiln_ir::{Graph, IrError, Op, Result};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A graph-to-graph transformation. Passes keep the graph's signature (inputs, output names
/// and types) and its results.
pub trait Pass: Send + Sync {
    /// The name `kiln dump --after` and `--passes` use.
    fn name(&self) -> &'static str;
    fn run(&self, graph: &mut Graph) -> Result<()>;
    /// Why this pass will not run on `graph` (too large for it to finish in reasonable
    /// time, say); the report shows the reason in place of the run.
    fn skip(&self, _graph: &Graph) -> Option<String> {
        None
    }
}

/// How much to optimize.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No passes: the graph as the bridge made it.
    O0,
    /// The classic passes: folding, dead code, common subexpressions, identities.
    O1,
    /// Everything: the classic passes, layout, e-graph rewriting and fusion.
    #[default]
    O2,
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Level, String> {
        match s.trim_start_matches(['-', 'O', 'o']) {
            "0" => Ok(Level::O0),
            "1" => Ok(Level::O1),
            "2" => Ok(Level::O2),
            _ => Err(format!(
                "unknown optimization level `{s}`; expected 0, 1 or 2"
            )),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self {
            Level::O0 => 0,
            Level::O1 => 1,
            Level::O2 => 2,
        };
        write!(f, "-O{n}")
    }
}

/// One pass's run: what it did to the graph's size and how long it took.
#[derive(Clone, Debug, PartialEq)]
pub struct PassStats {
    pub name: &'static str,
    /// Operation nodes (not inputs or constants) before and after the pass.
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub time: Duration,
    /// Why the pass did not run, when it did not.
    pub skipped: Option<String>,
}

/// What a pipeline run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub level: Level,
    pub passes: Vec<PassStats>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pipeline {} ({} passes)", self.level, self.passes.len())?;
        writeln!(
            f,
            "  {:<20} {:>8} {:>8} {:>10}",
            "pass", "before", "after", "time"
        )?;
        for p in &self.passes {
            writeln!(
                f,
                "  {:<20} {:>8} {:>8} {:>8.2}ms",
                p.name,
                p.nodes_before,
                p.nodes_after,
                p.time.as_secs_f64() * 1e3
            )?;
            if let Some(why) = &p.skipped {
                writeln!(f, "  {:<20} skipped: {why}", "")?;
            }
        }
        Ok(())
    }
}

/// How to run a pipeline.
#[derive(Clone, Debug)]
pub struct Options {
    pub level: Level,
    /// Run the verifier after every pass (on in tests and debug builds by default, and
    /// whenever the environment variable `KILN_VERIFY` is set).
    pub verify: bool,
    /// Stop after the first pass of this name (`kiln dump --after PASS`).
    pub stop_after: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            level: Level::O2,
            verify: cfg!(debug_assertions) || std::env::var_os("KILN_VERIFY").is_some(),
            stop_after: None,
        }
    }
}

impl Options {
    pub fn level(level: Level) -> Options {
        Options {
            level,
            ..Options::default()
        }
    }
}

/// Passes in the order they run.
pub struct Pipeline {
    pub level: Level,
    passes: Vec<Box<dyn Pass>>,
}

impl Pipeline {
    pub fn empty(level: Level) -> Pipeline {
        Pipeline {
            level,
            passes: Vec::new(),
        }
    }

    /// The standard pipeline for `level`.
    pub fn standard(level: Level) -> Pipeline {
        let mut p = Pipeline::empty(level);
        if level >= Level::O1 {
            crate::pipelines::classic(&mut p);
        }
        if level >= Level::O2 {
            crate::pipelines::full(&mut p);
        }
        p
    }

    pub fn push(&mut self, pass: impl Pass + 'static) -> &mut Pipeline {
        self.passes.push(Box::new(pass));
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs every pass on `graph` in order.
    pub fn run(&self, graph: &mut Graph, options: &Options) -> Result<Report> {
        if let Some(stop) = &options.stop_after {
            if !self.passes.iter().any(|p| p.name() == stop) {
                return Err(IrError::msg(format!(
                    "no pass `{stop}` in the {} pipeline; it has: {}",
                    self.level,
                    self.names().join(", ")
                )));
            }
        }
        let mut report = Report {
            level: self.level,
            passes: Vec::new(),
        };
        for pass in &self.passes {
            let nodes_before = op_count(graph);
            let start = Instant::now();
            let skipped = pass.skip(graph);
            if skipped.is_none() {
                pass.run(graph).map_err(|e| in_pass(pass.name(), e))?;
            }
            let time = start.elapsed();
            if options.verify && skipped.is_none() {
                kiln_ir::verify(graph).map_err(|e| {
                    in_pass(
                        pass.name(),
                        IrError {
                            message: format!("left an invalid graph: {}", e.message),
                            ..e
                        },
                    )
                })?;
            }
            report.passes.push(PassStats {
                name: pass.name(),
                nodes_before,
                nodes_after: op_count(graph),
                time,
                skipped,
            });
            if options.stop_after.as_deref() == Some(pass.name()) {
                break;
            }
        }
        Ok(report)
    }
}

/// Runs the standard pipeline for `options.level` on `graph`.
pub fn optimize(graph: &mut Graph, options: &Options) -> Result<Report> {
    Pipeline::standard(options.level).run(graph, options)
}

/// Nodes that compute something: everything but inputs and constants. After fusion, each
/// one is a kernel a backend launches.
pub fn op_count(graph: &Graph) -> usize {
    graph
        .nodes
        .node_weights()
        .filter(|n| !matches!(n.op, Op::Input | Op::Const { .. }))
        .count()
}

fn in_pass(pass: &str, e: IrError) -> IrError {
    IrError {
        message: format!("pass {pass}: {}", e.message),
        ..e
    }
}
