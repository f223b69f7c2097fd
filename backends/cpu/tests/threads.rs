//! The pool runs every part exactly once per call, also when callers race for it.

use kiln_cpu::gemm::threads::Pool;
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn every_part_runs_once_per_call() {
    let pool = Pool::new(3);
    let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
    for _ in 0..1000 {
        pool.run(&|i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
    }
    for c in &counts {
        assert_eq!(c.load(Ordering::Relaxed), 1000);
    }
}

#[test]
fn racing_callers_each_get_all_their_parts() {
    let pool = Pool::new(2);
    let total = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..200 {
                    let parts = AtomicUsize::new(0);
                    pool.run(&|_| {
                        parts.fetch_add(1, Ordering::Relaxed);
                    });
                    assert_eq!(parts.load(Ordering::Relaxed), 2);
                    total.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(total.load(Ordering::Relaxed), 800);
}

#[test]
fn a_panicking_part_reaches_the_caller_and_the_pool_survives() {
    let pool = Pool::new(2);
    let result = std::panic::catch_unwind(|| pool.run(&|i| assert!(i != 1, "part 1 fails")));
    assert!(result.is_err());
    let ran = AtomicUsize::new(0);
    pool.run(&|_| {
        ran.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(ran.load(Ordering::Relaxed), 2);
}

#[test]
fn parts_run_once_when_threads_sleep_between_and_during_jobs() {
    // Pauses longer than the pool's spin put the workers to sleep before the next job;
    // parts longer than it put the caller to sleep while it waits. Both wake-ups must come.
    let pool = Pool::new(3);
    let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
    for round in 0..60 {
        let slow = round % 3;
        pool.run(&|i| {
            if i == slow {
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
        if round % 2 == 0 {
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }
    for c in &counts {
        assert_eq!(c.load(Ordering::Relaxed), 60);
    }
}
