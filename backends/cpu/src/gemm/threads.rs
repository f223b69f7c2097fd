//! A fixed pool with one thread per core, the caller being one of them: no oversubscription.
//!
//! `run(f)` calls `f(0)` on the caller and `f(1..threads)` on the workers, and returns when
//! all are done. If another caller holds the pool, the work runs entirely on the calling
//! thread instead of queueing more threads than cores.
//!
//! Workers and the caller spin for a few tens of microseconds before sleeping: a model runs
//! one GEMM after another, and a futex wake-up per layer would cost more than the spin.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle thread polls before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

type Job = dyn Fn(usize) + Sync;

/// A job pointer handed to the workers; `run` keeps the job alive until they finish.
#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is Sync and outlives every use (see `Pool::run`).
unsafe impl Send for JobPtr {}

struct State {
    job: Option<JobPtr>,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

struct Shared {
    /// Bumped (under the `state` lock) each time a job is posted.
    generation: AtomicU64,
    /// Workers still running the current job.
    pending: AtomicUsize,
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: usize,
    busy: Mutex<()>,
}

impl Pool {
    /// A pool of `threads` threads in all (the caller plus `threads - 1` workers).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            state: Mutex::new(State {
                job: None,
                panic: None,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        // A thread the system refuses leaves a smaller pool, not a panic: the caller is
        // always one of the workers, so work still runs.
        let mut workers = 0;
        for index in 1..threads.max(1) {
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new().name(format!("kiln-cpu-{index}")).spawn(move || worker(&shared, index));
            if spawned.is_err() {
                break;
            }
            workers = index;
        }
        Pool {
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// The process-wide pool, sized to the machine's cores.
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
    }

    pub fn threads(&self) -> usize {
        self.workers + 1
    }

    /// Runs `f(i)` for every `i < threads()`, in parallel when the pool is free.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        let Ok(_guard) = self.busy.try_lock() else {
            (0..self.threads()).for_each(f);
            return;
        };
        if self.workers == 0 {
            f(0);
            return;
        }
        {
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY (lifetime erased): we wait below until `pending` is 0, that is until no
            // worker holds the pointer any more, before `f` can go out of scope.
            let f: &'static Job =
                unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f) };
            s.job = Some(JobPtr(f));
            self.shared.pending.store(self.workers, Ordering::Release);
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
            self.shared.work.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let shared = &*self.shared;
        spin_until(|| shared.pending.load(Ordering::Acquire) == 0);
        let mut s = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        while shared.pending.load(Ordering::Acquire) > 0 {
            s = shared.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.job = None;
        let theirs = s.panic.take();
        drop(s);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = theirs {
            resume_unwind(p);
        }
    }
}

/// Polls `done` for up to [`SPIN`]; true if it became true.
fn spin_until(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() > SPIN {
            return false;
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        spin_until(|| shared.generation.load(Ordering::Acquire) != seen);
        let job = {
            let mut s = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while shared.generation.load(Ordering::Acquire) == seen {
                s = shared.work.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            seen = shared.generation.load(Ordering::Acquire);
            s.job
        };
        let result = match job {
            // SAFETY: `run` keeps the job alive until `pending` drops to 0 below.
            Some(JobPtr(f)) => catch_unwind(AssertUnwindSafe(|| unsafe { (*f)(index) })),
            None => Ok(()),
        };
        let mut s = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(p) = result {
            s.panic = Some(p);
        }
        // Under the lock, so a caller between its check and its wait cannot miss the wake.
        if shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.done.notify_one();
        }
    }
}
