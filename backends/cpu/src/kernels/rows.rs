//! Splitting an output into independent rows over the pool's threads (pooling planes,
//! softmax rows, normalised rows, concatenated blocks).

use crate::device::Ctx;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many elements touched, one thread does the whole op: waking the other
/// (tens of microseconds when the machine is busy) costs more than it saves.
pub(crate) const PARALLEL_MIN_WORK: usize = 1 << 17;

/// Output pointer shared by the threads; each writes its own rows.
pub(crate) struct Out(pub *mut f32);
// SAFETY: threads write disjoint rows (each row range is taken once from a counter).
unsafe impl Sync for Out {}

impl Out {
    /// A method, so closures capture the whole `Out` (which is Sync), not its raw field.
    pub fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Calls `f(row, out_row)` for each of the `out.len() / row_len` rows of `out`, split over
/// the pool when `work` (elements read and written in all) is large enough. Threads take
/// a few rows at a time from a shared counter, so a late thread leaves its share.
pub(crate) fn for_each_row(
    ctx: &Ctx,
    out: &mut [f32],
    row_len: usize,
    work: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    if row_len == 0 {
        return;
    }
    let rows = out.len() / row_len;
    let threads = ctx.pool.map_or(1, |p| p.threads());
    let chunk = (rows / (8 * threads)).max(1);
    let base = Out(out.as_mut_ptr());
    let next = AtomicUsize::new(0);
    let body = |_thread: usize| loop {
        let r0 = next.fetch_add(chunk, Ordering::Relaxed);
        if r0 >= rows {
            return;
        }
        for r in r0..(r0 + chunk).min(rows) {
            // SAFETY: row r lies inside `out`, and only this thread took it.
            let row = unsafe { std::slice::from_raw_parts_mut(base.at(r * row_len), row_len) };
            f(r, row);
        }
    };
    match ctx.pool {
        Some(pool) if rows > 1 && work >= PARALLEL_MIN_WORK => pool.run(&body),
        _ => body(0),
    }
}
