//! How the C heap hands out the large buffers a forward pass allocates and frees on every
//! layer (activations, products, scores: megabytes each at prompt sizes).
//!
//! glibc serves allocations above its mmap threshold with fresh mappings and unmaps them on
//! free, so each such buffer costs a page fault and a zeroed page per 4 KiB every time it is
//! allocated: 6% of a Gemma 3 270M 512-token prompt's profile was page faults. Raising the
//! threshold to glibc's largest (32 MiB on 64-bit) and keeping freed memory at the top of
//! the heap lets a pass reuse the pages the previous layer freed. The cost: up to the trim
//! threshold of freed memory stays mapped between passes, and the heap's holes add a little
//! to the peak (the Llama 3.2 1B shape's tg128: 812 → 836 MiB).

/// Largest mmap threshold glibc accepts on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Freed memory kept at the top of the heap before glibc returns it to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 256 << 20;

/// Keeps large freed buffers for reuse (glibc on Linux; elsewhere the allocator's own policy
/// stands). Call once, early, from the binary: it changes the whole process's heap.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; both values are in the ranges
    // glibc documents, and a refusal (return 0) leaves its defaults, which are correct too.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Returns the heap's free pages to the system (glibc on Linux; elsewhere nothing): for the
/// end of a model's load, whose temporary buffers (weights repacked or stacked, then their
/// parts freed) would otherwise stay in the resident set as holes in the heap.
pub fn return_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
