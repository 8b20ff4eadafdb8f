//! A memory budget for the thread that renders a chat template. A template is code from the
//! model file, and minijinja's operators (`~`, `+`, `*`) build strings with no hook to stop
//! them: ten lines of `{% set s = s ~ s %}` ask for gigabytes and the allocation failure
//! aborts the process. [`BudgetAllocator`], installed as the binary's global allocator, counts
//! what a thread under a budget holds; when the budget is spent it raises the thread's flag and
//! parks the thread for good, so the caller can return a clean error instead of aborting. The
//! parked thread keeps what it allocated (at most the budget) until the process exits.
//!
//! Without [`BudgetAllocator`] installed (library users, in-process tests) budgets are inert.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The system allocator, counting what threads under a budget hold (see the module docs).
pub struct BudgetAllocator;

thread_local! {
    /// Bytes this thread may hold; 0 when it has no budget.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
    /// Bytes this thread allocated and has not freed since its budget began (frees of memory
    /// from before make it negative, which is harmless).
    static HELD: Cell<isize> = const { Cell::new(0) };
    /// Raised when the budget is spent; points into an `Arc` the thread keeps alive.
    static SPENT: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

/// Puts the current thread under a budget of `bytes`; `spent` is raised if it runs out. The
/// caller must keep `spent` alive for the rest of the thread's life (it is read after the
/// thread parks for good).
pub fn enter(bytes: usize, spent: &Arc<AtomicBool>) {
    SPENT.with(|s| s.set(Arc::as_ptr(spent)));
    HELD.with(|h| h.set(0));
    LIMIT.with(|l| l.set(bytes.max(1)));
}

/// Lifts the current thread's budget.
pub fn leave() {
    LIMIT.with(|l| l.set(0));
}

fn charge(bytes: usize) {
    // `try_with`: an allocation during thread teardown must not panic inside the allocator.
    let _ = LIMIT.try_with(|limit| {
        let limit = limit.get();
        if limit == 0 {
            return;
        }
        let held = HELD.with(|h| {
            let held = h
                .get()
                .saturating_add(isize::try_from(bytes).unwrap_or(isize::MAX));
            h.set(held);
            held
        });
        if usize::try_from(held).is_ok_and(|held| held > limit) {
            spend();
        }
    });
}

fn discharge(bytes: usize) {
    let _ = LIMIT.try_with(|limit| {
        if limit.get() != 0 {
            HELD.with(|h| {
                h.set(
                    h.get()
                        .saturating_sub(isize::try_from(bytes).unwrap_or(isize::MAX)),
                )
            });
        }
    });
}

/// The budget is spent: raise the flag and never return (an allocator may neither fail
/// gracefully nor unwind). Sleeping allocates nothing.
fn spend() -> ! {
    LIMIT.with(|l| l.set(0));
    SPENT.with(|s| {
        // SAFETY: `enter`'s contract keeps the flag alive while this thread lives.
        if let Some(flag) = unsafe { s.get().as_ref() } {
            flag.store(true, Ordering::SeqCst);
        }
    });
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for BudgetAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        discharge(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            discharge(layout.size() - new_size);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
