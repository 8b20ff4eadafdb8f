//! The thread pool our row-parallel CPU kernels run on.
//!
//! Work is split into chunks claimed from a shared cursor, and the submitting thread claims
//! chunks too. A claim takes a share of what is left (guided scheduling), so chunks start
//! large and shrink towards the end, and the threads finish within a small chunk of each other
//! with few claims. It waits only for chunks that were claimed, never for a worker to show up: a
//! worker that lost its core to another process simply finds no work left when it wakes. That
//! is what keeps decoding alive on a busy machine, where pools that wait at a barrier for every
//! worker (candle's, llama.cpp's) stall each product for a scheduler time slice. Idle workers
//! spin briefly, so back-to-back products do not pay a wake-up, then park.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks. Decoding one token submits a few hundred
/// products with tens of microseconds between them; spinning across those gaps is what makes
/// the pool as fast as a pure spinning one on an idle machine.
const SPIN: Duration = Duration::from_micros(300);

/// After this long idle, a spinning worker yields its core between checks: on an idle machine
/// that costs a system call per check, on a busy one it hands the core to the thread that
/// needs it (ours or another process's).
const YIELD_AFTER: Duration = Duration::from_micros(20);

/// How long the submitter spins on other threads' claimed chunks before it yields its core
/// between checks (so a preempted worker on the same core can finish).
const WAIT_SPIN: Duration = Duration::from_micros(50);

/// The task of one submission, with its lifetime erased (see [`Job::work`]).
type Task = *const (dyn Fn(Range<usize>) + Sync);

/// One submission: a task over `0..n`, handed out in chunks.
struct Job {
    task: Task,
    n: usize,
    /// The smallest claim.
    least: usize,
    /// A claim takes `1 / split` of what is left (at least `least`).
    split: usize,
    cursor: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
}

// SAFETY: `task` points to a `Sync` closure; it is only called while the submitter waits for it
// (see `Job::work`), so sharing the pointer between threads is sound.
unsafe impl Send for Job {}
// SAFETY: as above; every other field is atomic.
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs chunks until none are left.
    fn work(&self) {
        let mut start = self.cursor.load(Ordering::Relaxed);
        loop {
            if start >= self.n {
                return;
            }
            let size = ((self.n - start) / self.split).max(self.least);
            let end = (start + size).min(self.n);
            if let Err(now) =
                self.cursor
                    .compare_exchange_weak(start, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                start = now;
                continue;
            }
            // SAFETY: the chunk was claimed before `cursor` passed `n`, so the submitter is
            // still inside `Pool::run`, waiting until `done` counts this chunk: the closure
            // behind `task` is alive for the whole call.
            let task = unsafe { &*self.task };
            if catch_unwind(AssertUnwindSafe(|| task(start..end))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.done.fetch_add(end - start, Ordering::Release);
            start = self.cursor.load(Ordering::Relaxed);
        }
    }
}

/// What the submitter and the workers share.
struct Shared {
    job: Mutex<Option<Arc<Job>>>,
    generation: AtomicU64,
    sleepers: AtomicUsize,
}

/// A pool of `threads - 1` workers plus the submitting thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<Thread>,
    /// Held during a submission; a second one (another thread, or a task that submits) runs
    /// inline instead.
    busy: Mutex<()>,
}

impl Pool {
    /// A pool whose submissions run on `threads` threads in all (the caller included).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            generation: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
        });
        let workers = (1..threads.max(1))
            .filter_map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("mlcli-cpu-{i}"))
                    .spawn(move || worker(&shared))
                    .ok()
                    .map(|h| h.thread().clone())
            })
            .collect();
        Self {
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// The process-wide pool, sized by candle's thread count (`-t`).
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool::new(candle_core::utils::get_num_threads()))
    }

    /// Threads a submission runs on.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `task` over chunks of `0..n` on the pool's threads and returns when all are done.
    pub fn run(&self, n: usize, task: impl Fn(Range<usize>) + Sync) {
        let guard = self.busy.try_lock();
        if self.workers.is_empty() || n < 2 || guard.is_err() {
            task(0..n);
            return;
        }
        let task_ref: &(dyn Fn(Range<usize>) + Sync) = &task;
        // SAFETY: only the lifetime is erased; `Job::work` explains why no call outlives it.
        let task_ptr: Task = unsafe { std::mem::transmute(task_ref) };
        let job = Arc::new(Job {
            task: task_ptr,
            n,
            least: n.div_ceil(self.threads() * 32).max(1),
            split: 2 * self.threads(),
            cursor: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        });
        *lock(&self.shared.job) = Some(Arc::clone(&job));
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            for w in &self.workers {
                w.unpark();
            }
        }
        job.work();
        let start = Instant::now();
        while job.done.load(Ordering::Acquire) < n {
            if start.elapsed() < WAIT_SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *lock(&self.shared.job) = None;
        drop(guard);
        if job.panicked.load(Ordering::Relaxed) {
            panic!("a CPU kernel panicked on a pool thread");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A worker: waits for a new generation (spinning, then parked), joins its job, repeats.
fn worker(shared: &Shared) {
    let mut seen = shared.generation.load(Ordering::SeqCst);
    loop {
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = shared.generation.load(Ordering::SeqCst);
            if g != seen {
                seen = g;
                break;
            }
            spins = spins.wrapping_add(1);
            let idle = if spins.is_multiple_of(64) {
                idle_since.elapsed()
            } else {
                Duration::ZERO
            };
            if idle > YIELD_AFTER && idle <= SPIN {
                // Past the usual gap between products: let whatever shares this core run.
                std::thread::yield_now();
            }
            if idle > SPIN {
                // Announce the sleep before the last check: the submitter bumps the generation
                // before it reads `sleepers`, so one of the two sees the other.
                shared.sleepers.fetch_add(1, Ordering::SeqCst);
                if shared.generation.load(Ordering::SeqCst) == seen {
                    std::thread::park();
                }
                shared.sleepers.fetch_sub(1, Ordering::SeqCst);
                idle_since = Instant::now();
            } else {
                std::hint::spin_loop();
            }
        }
        let job = lock(&shared.job).clone();
        if let Some(job) = job {
            job.work();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_exactly_once() {
        let pool = Pool::new(3);
        for n in [0, 1, 2, 7, 100, 4099] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, |r| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn submissions_from_several_threads_and_from_tasks_complete() {
        let pool = Pool::new(2);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        pool.run(64, |r| {
                            // A nested submission runs inline.
                            pool.run(r.len(), |inner| {
                                total.fetch_add(inner.len(), Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 64);
    }

    #[test]
    fn a_panicking_task_panics_the_submitter_and_leaves_the_pool_usable() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(1000, |r| assert!(!r.contains(&999), "boom"));
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(10, |r| {
            count.fetch_add(r.len(), Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn submissions_to_a_pool_with_parked_workers_complete() {
        let pool = Pool::new(2);
        std::thread::sleep(SPIN * 4);
        let count = AtomicUsize::new(0);
        pool.run(1000, |r| {
            count.fetch_add(r.len(), Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 1000);
    }
}
