// Scratch probe for issue 18 (notes/plan-issue-18.md): heap bytes per hold of
// raftlock-core's State. Not built by the workspace: copy into a scratch crate
// with `raftlock-core = { path = "/work/main/crates/raftlock-core" }`.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use raftlock_core::*;

static LIVE: AtomicIsize = AtomicIsize::new(0);
struct Counting;
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 { LIVE.fetch_add(l.size() as isize, Ordering::Relaxed); unsafe { System.alloc(l) } }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) { LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed); unsafe { System.dealloc(p, l) } }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 { LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed); unsafe { System.realloc(p, l, n) } }
}
#[global_allocator]
static A: Counting = Counting;

fn main() {
    let leases: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let per: u64 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let mut state = State::new();
    let mut limits = state.header().limits.clone();
    limits.max_leases = 10_000_000; limits.max_holds_per_lease = 10_000_000; limits.max_locks_per_request = 1000;
    let mut index = 1;
    let r = state.apply(index, &Request::new(1, 1, Command::SetLimits { limits }));
    assert!(r.result.is_ok(), "{:?}", r.result);
    index += 1;
    let before = LIVE.load(Ordering::Relaxed);
    let mut ids = Vec::new();
    for l in 0..leases {
        let a = state.apply(index, &Request::new(index, index, Command::GrantLease { ttl_ms: 60_000, owner: format!("worker-{l}"), identity: String::new(), quota: Default::default() }));
        let id = match a.result { Ok(Response::LeaseGranted { lease, .. }) => lease, other => panic!("{other:?}") };
        ids.push(id);
        index += 1;
    }
    let after_leases = LIVE.load(Ordering::Relaxed);
    for (l, id) in ids.iter().enumerate() {
        for chunk in 0..(per / 64).max(1) {
            let locks = (0..64.min(per)).map(|i| LockSpec { name: format!("jobs/{l}/{}", chunk * 64 + i), mode: Mode::Exclusive }).collect();
            let a = state.apply(index, &Request::new(index, index, Command::Acquire { lease: *id, locks, wait: false, reason: String::new(), metadata: Default::default(), lock_delay_ms: 0, quota: Default::default() }));
            assert!(a.result.is_ok(), "{:?}", a.result);
            index += 1;
        }
    }
    let _ = state.take_dirty();
    let after = LIVE.load(Ordering::Relaxed);
    let holds: usize = state.locks().map(|l| l.holds.len()).sum();
    println!("leases {leases}: {} B each", (after_leases - before) / leases as isize);
    println!("holds {holds}: {} B per hold (core State only, heap)", (after - after_leases) / holds as isize);
    println!("size_of Hold {} Lock {} Lease {}", std::mem::size_of::<Hold>(), std::mem::size_of::<Lock>(), std::mem::size_of::<Lease>());
}
