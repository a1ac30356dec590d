//! A global allocator for test binaries: the system's, recording per
//! thread the largest single allocation asked for, so a test can prove
//! what one decode on its own thread allocated at most (where the system
//! would grant a lazily mapped terabyte, nothing else would notice).
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: raftlock_testkit::alloc_watch::Watching = raftlock_testkit::alloc_watch::Watching;
//! ```
//! (raftlock-core's tests carry their own copy: the core does not depend on
//! this kit.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // `const`: reading it never allocates (no lazy initialisation), so the
    // allocator may use it.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: during a thread's teardown the slot may be gone.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

pub struct Watching;

// SAFETY: every call is passed on to `System` unchanged.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The largest single allocation `f` asked for on this thread (0 if the
/// binary's allocator is not [`Watching`]), and what `f` returned.
pub fn largest_allocation_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = LARGEST.with(|l| l.replace(0));
    let value = f();
    let largest = LARGEST.with(|l| l.replace(before.max(l.get())));
    (largest, value)
}
