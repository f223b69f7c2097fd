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
/// the pool when `work` (elements read and written in all) is large enough.
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
    let base = Out(out.as_mut_ptr());
    split_rows(ctx, out.len() / row_len, work, |r| {
        // SAFETY: row r lies inside `out`, and only this thread took it.
        let row = unsafe { std::slice::from_raw_parts_mut(base.at(r * row_len), row_len) };
        f(r, row);
    });
}

/// [`for_each_row`] into fresh memory: calls `f(row, dst)` for each of the
/// `len.div_ceil(row_len)` rows, `dst` pointing at the row's floats in the result's
/// capacity (`row_len` of them, fewer in a last, short row), and returns the result
/// without zero-filling it first.
///
/// # Safety
/// `f` must write every one of its row's floats at `dst` (and read none of them first).
pub(crate) unsafe fn collect_rows(
    ctx: &Ctx,
    len: usize,
    row_len: usize,
    work: usize,
    f: impl Fn(usize, *mut f32) + Sync,
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if row_len == 0 {
        return out;
    }
    let rows = len.div_ceil(row_len);
    let base = Out(out.as_mut_ptr());
    split_rows(ctx, rows, work, |r| f(r, base.at(r * row_len)));
    // SAFETY: `f` wrote every row 0..rows, all of `len` (the caller's contract); the pool
    // returns after every thread finishes and re-raises a worker's panic before this.
    unsafe { out.set_len(len) };
    out
}

/// Calls `f(row)` for each of `rows` rows, over the pool when `work` is large enough.
/// Threads take a few rows at a time from a shared counter, so a late thread leaves its
/// share.
fn split_rows(ctx: &Ctx, rows: usize, work: usize, f: impl Fn(usize) + Sync) {
    let threads = ctx.pool.map_or(1, |p| p.threads());
    let chunk = (rows / (8 * threads)).max(1);
    let next = AtomicUsize::new(0);
    let body = |_thread: usize| loop {
        let r0 = next.fetch_add(chunk, Ordering::Relaxed);
        if r0 >= rows {
            return;
        }
        for r in r0..(r0 + chunk).min(rows) {
            f(r);
        }
    };
    match ctx.pool {
        Some(pool) if rows > 1 && work >= PARALLEL_MIN_WORK => pool.run(&body),
        _ => body(0),
    }
}
