//! A fixed pool with one thread per core, the caller being one of them: no oversubscription.
//!
//! `run(f)` calls `f(0)` on the caller and `f(1..threads)` on the workers, and returns when
//! all are done. If another caller holds the pool, the work runs entirely on the calling
//! thread instead of queueing more threads than cores.
//!
//! A model runs one kernel after another and most post a job here, so the hand-off is paid
//! per kernel. It is lock-free while the threads are awake: the job is published by
//! bumping `generation`, finished by counting `pending` down, and workers and the caller
//! spin for a few tens of microseconds before they sleep. Only a thread that went to sleep
//! costs a lock and a futex call: it says so in `sleepers` (or `caller_sleeps`) before its
//! last look, and whoever changes what it waits for looks there afterwards (both SeqCst,
//! so one of the two sees the other).

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle thread polls before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

type Job = dyn Fn(usize) + Sync;

/// A job pointer handed to the workers; `run` keeps the job alive until they finish.
#[derive(Clone, Copy)]
struct JobPtr(*const Job);

struct Shared {
    /// The current job. Written only by the caller holding `Pool::busy`, before it bumps
    /// `generation` and after `pending` reached 0: no worker reads it meanwhile.
    job: UnsafeCell<Option<JobPtr>>,
    /// Bumped each time a job is posted.
    generation: AtomicU64,
    /// Workers still running the current job.
    pending: AtomicUsize,
    /// Workers asleep on `work` (or about to be).
    sleepers: AtomicUsize,
    /// The caller is asleep on `done` (or about to be).
    caller_sleeps: AtomicBool,
    /// A worker's panic, raised again on the caller.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    /// Held around sleeping and waking, so a wake-up between a thread's last look and its
    /// wait cannot be missed.
    sleep: Mutex<()>,
    work: Condvar,
    done: Condvar,
}

// SAFETY: `job` is written and read under the protocol described on the field; the rest
// is atomics and locks. The job itself is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}
// `run` restores the pool's state (waits for the workers, clears the job) before it raises
// a panic again, so a pool seen across a caught panic is whole.
impl std::panic::RefUnwindSafe for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: usize,
    busy: Mutex<()>,
}

impl Pool {
    /// A pool of `threads` threads in all (the caller plus `threads - 1` workers).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            caller_sleeps: AtomicBool::new(false),
            panic: Mutex::new(None),
            sleep: Mutex::new(()),
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
        let shared = &*self.shared;
        // SAFETY (lifetime erased): we wait below until `pending` is 0, that is until no
        // worker holds the pointer any more, before `f` can go out of scope. No worker
        // reads `job` now: the last job's `pending` reached 0 and the next is not posted.
        unsafe {
            let f: &'static Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f);
            *shared.job.get() = Some(JobPtr(f));
        }
        shared.pending.store(self.workers, Ordering::SeqCst);
        shared.generation.fetch_add(1, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            shared.work.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        if !spin_until(|| shared.pending.load(Ordering::Acquire) == 0) {
            let mut g = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            shared.caller_sleeps.store(true, Ordering::SeqCst);
            while shared.pending.load(Ordering::SeqCst) > 0 {
                g = shared.done.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            shared.caller_sleeps.store(false, Ordering::SeqCst);
        }
        // SAFETY: every worker is done with the job (`pending` is 0).
        unsafe { *shared.job.get() = None };
        let theirs = shared.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
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
        if !spin_until(|| shared.generation.load(Ordering::Acquire) != seen) {
            let mut g = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            shared.sleepers.fetch_add(1, Ordering::SeqCst);
            while shared.generation.load(Ordering::SeqCst) == seen {
                g = shared.work.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            shared.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        seen = shared.generation.load(Ordering::Acquire);
        // SAFETY: posted before `generation` moved past `seen`, and not touched again until
        // this worker counts `pending` down below.
        let job = unsafe { *shared.job.get() };
        let result = match job {
            // SAFETY: `run` keeps the job alive until `pending` drops to 0 below.
            Some(JobPtr(f)) => catch_unwind(AssertUnwindSafe(|| unsafe { (*f)(index) })),
            None => Ok(()),
        };
        if let Err(p) = result {
            *shared.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        }
        if shared.pending.fetch_sub(1, Ordering::SeqCst) == 1 && shared.caller_sleeps.load(Ordering::SeqCst) {
            let _g = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            shared.done.notify_one();
        }
    }
}
