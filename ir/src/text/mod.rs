//! The text form of a graph: printable, parsable, exact on round trip, stable enough for
//! snapshot tests.
//!
//! ```text
//! graph small_cnn(%x: f32[N,3,32,32]) -> (%y: f32[N,10]) {
//!   @w0 = f32[16,3,3,3] bin(0, 1728)
//!   @b0 = f32[16] bin(1728, 64)
//!   %0 = conv(%x, @w0, @b0) {auto_pad=explicit, dilations=[], group=1, kernel_shape=[], pads=[1,1,1,1], strides=[1,1]} : f32[N,16,32,32] "conv1"
//!   %1 = relu(%0) : f32[N,16,32,32] "conv1/Relu"
//!   %2 = split(%1, @sizes) {axis=1} : (f32[N,8,32,32], f32[N,8,32,32])
//!   %3 = add(%2.0, %2.1) : f32[N,8,32,32]
//!   ...
//!   return %9
//! }
//! ```
//!
//! Grammar (whitespace and `#` comments to the end of a line are insignificant):
//!
//! ```text
//! graph   := 'graph' label '(' [param {',' param}] ')' '->' '(' [param {',' param}] ')'
//!            '{' stmt* 'return' [ref {',' ref}] '}'
//! param   := '%' label ':' type                         graph inputs, then named outputs
//! stmt    := '@' label '=' tensor [string]              a constant
//!          | '%' INT '=' op '(' [arg {',' arg}] ')' [attrs] ':' types [string]
//!          | 'input' '%' label                          see "Order" below
//! arg     := ref | '_'                                  `_`: an absent optional input
//! ref     := '%' label ['.' INT] | '@' label            `%3.1`: output 1 of node %3
//! attrs   := '{' [IDENT '=' value {',' IDENT '=' value}] '}'
//! value   := INT | FLOAT | HEX | 'true' | 'false' | IDENT | string
//!          | '[' [scalar {',' scalar}] ']' | tensor | graph
//! tensor  := type ( '[' [scalar {',' scalar}] ']' | 'bin' '(' INT ',' INT ')' )
//! types   := type | '(' [type {',' type}] ')'
//! type    := DTYPE '[' ( '*' | [dim {',' dim}] ) ']'     f32[N,3,?,224], f32[*], f32[]
//! dim     := INT | label | '?'
//! label   := IDENT | INT | string                       IDENT = [A-Za-z_][A-Za-z0-9_]*
//! ```
//!
//! - Node ids `%0, %1, …` number the non-constant nodes in topological order; the trailing
//!   string is the node's source-model name (left out when empty).
//! - A constant's label is its name when that name is a non-empty identifier-or-string
//!   unique among the graph's constants; otherwise it gets a number (`@0`) and its name
//!   follows as a trailing string.
//! - Tensor data is flat, row-major. Floats use the shortest decimal that reads back to
//!   the same bits; non-finite floats are written as their bit pattern in hex
//!   (`0x7fc00000`). Hex literals are only ever float bit patterns, so in an attribute
//!   `0x…` is an f32. f16 and bf16 use the shortest decimal that rounds back to them.
//! - Nested graphs (If branches, Loop and Scan bodies) are attribute values, printed
//!   inline; each is a closed scope of its own.
//! - Order: the statements appear in the graph's topological order, constants included,
//!   so that `parse(print(g)) == g` holds node for node. Graph inputs come first, in
//!   signature order; an input that the graph orders later (say, added after some nodes)
//!   is placed by an `input %name` line.
//!
//! [`Weights`] chooses how constants' values are written. The parser never panics and
//! never allocates more than its input justifies; errors carry `line:column`.

mod build;
mod data;
mod lex;
mod parse;
mod print;

use crate::error::Result;
use crate::graph::Graph;
use std::fmt;

/// Constants with at most this many elements are written inline even in the
/// [`Weights::Elided`] and [`Weights::External`] modes.
pub const INLINE_MAX: usize = 8;

/// Nested graphs (If branches, Loop and Scan bodies) may nest at most this deep in text.
pub const MAX_DEPTH: usize = 64;

/// How [`print`] writes the values of constants (and of tensor-valued attributes).
#[derive(Debug)]
pub enum Weights<'a> {
    /// Every value in the text: exact, self-contained, parsable without a `.bin`.
    Inline,
    /// Constants of up to [`INLINE_MAX`] elements inline, larger ones as their type only.
    /// For reading (`kiln dump`, snapshots); such text does not parse back.
    Elided,
    /// Constants of up to [`INLINE_MAX`] elements inline; larger ones have their
    /// little-endian bytes appended to the buffer at a 64-byte aligned offset and are
    /// written `bin(offset, nbytes)`. Offsets count from the buffer's start.
    External(&'a mut Vec<u8>),
}

/// The text form of `graph`, ending in a newline.
pub fn print(graph: &Graph, weights: Weights) -> String {
    print::print(graph, weights)
}

/// Parses the text form. `bin` holds the bytes that `bin(offset, nbytes)` references
/// point into (the `.bin` written beside a `.kir`). Node output types are taken as
/// written, not inferred; run [`crate::verify`] to check them.
pub fn parse(text: &str, bin: Option<&[u8]>) -> Result<Graph> {
    parse::parse(text, bin)
}

/// The text form with large constants elided, for reading.
impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self, Weights::Elided))
    }
}
