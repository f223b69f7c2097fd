//! A fixed pool with one thread per core, the caller being one of them: no oversubscription.
//!
//! `run(f)` calls `f(0)` on the caller and `f(1..threads)` on the workers, and returns when
//! all are done. If another caller holds the pool, the work runs entirely on the calling
//! thread instead of queueing more threads than cores.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

type Job = dyn Fn(usize) + Sync;

/// A job pointer handed to the workers; `run` keeps the job alive until they finish.
#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is Sync and outlives every use (see `Pool::run`).
unsafe impl Send for JobPtr {}

struct State {
    job: Option<JobPtr>,
    generation: u64,
    pending: usize,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

struct Shared {
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
            state: Mutex::new(State { job: None, generation: 0, pending: 0, panic: None }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let workers = threads.max(1) - 1;
        for index in 1..=workers {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("kiln-cpu-{index}"))
                .spawn(move || worker(&shared, index))
                .expect("spawning a pool thread");
        }
        Pool { shared, workers, busy: Mutex::new(()) }
    }

    /// The process-wide pool, sized to the machine's cores.
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            Pool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
        })
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
            let f: &'static Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f) };
            s.job = Some(JobPtr(f));
            s.generation += 1;
            s.pending = self.workers;
            self.shared.work.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.pending > 0 {
            s = self.shared.done.wait(s).unwrap_or_else(|e| e.into_inner());
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

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let job = {
            let mut s = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while s.generation == seen {
                s = shared.work.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            seen = s.generation;
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
        s.pending -= 1;
        if s.pending == 0 {
            shared.done.notify_one();
        }
    }
}
