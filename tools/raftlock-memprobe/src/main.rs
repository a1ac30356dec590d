//! `raftlock-memprobe LEASES NAMES_PER_LEASE`: heap bytes per hold of
//! raftlock-core's `State`, and where they go, measured with a counting
//! global allocator (every byte requested and not yet freed).
//!
//! It loads what `raftlock-bench --workload holds` loads into a cluster:
//! LEASES leases, each holding NAMES_PER_LEASE exclusive locks named
//! `holds/<lease>/<i>`, granted 64 names per Acquire (the default
//! `max_locks_per_request`). Then it splits the heap by structure, by the
//! size of the blocks each allocates (every structure of the state has
//! blocks of its own size; strings are the small ones), and lists the
//! live blocks by size.
//!
//! Requested bytes, not what an allocator rounds them up to: a node's
//! allocator (mimalloc) adds its size-class rounding on top.
//!
//! `cargo run --release -p raftlock-memprobe -- 1000 1000`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::mem::size_of;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use raftlock_core::{
    Command, Hold, Lease, Lock, LockKind, LockSpec, Mode, Request, Response, State,
};

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Live allocations by requested size (the last slot: every larger one),
/// to name what the structures above leave unattributed.
const SIZES: usize = 4097;
static BY_SIZE: [AtomicIsize; SIZES] = [const { AtomicIsize::new(0) }; SIZES];

fn count(size: usize, n: isize) {
    LIVE.fetch_add(size as isize * n, Ordering::Relaxed);
    BY_SIZE[size.min(SIZES - 1)].fetch_add(n, Ordering::Relaxed);
}

/// The system allocator, counting the bytes live.
struct Counting;

// SAFETY: every call is passed unchanged to `System`; only a counter is
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size(), 1);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(l.size(), -1);
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(l.size(), -1);
        count(n, 1);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Names per Acquire: the default `max_locks_per_request`.
const BATCH: u64 = 64;

fn main() -> ExitCode {
    let arg =
        |i: usize, default: u64| -> Result<u64, String> {
            match std::env::args().nth(i) {
                None => Ok(default),
                Some(a) => a.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("argument {i} must be a whole number above 0, got '{a}'")
                }),
            }
        };
    let (leases, per) = match (arg(1, 1000), arg(2, 1000)) {
        (Ok(l), Ok(p)) => (l, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}\nusage: raftlock-memprobe [LEASES] [NAMES_PER_LEASE]");
            return ExitCode::from(2);
        }
    };
    match probe(leases, per) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn probe(leases: u64, per: u64) -> Result<(), String> {
    let mut state = State::new();
    let mut limits = state.header().limits.clone();
    limits.max_leases = limits.max_leases.max(leases as u32);
    limits.max_holds_per_lease = limits.max_holds_per_lease.max(per as u32);
    let mut index = 1;
    let r = state.apply(index, &Request::new(1, 1, Command::SetLimits { limits }));
    r.result.map_err(|e| format!("SetLimits: {e}"))?;
    index += 1;
    let _ = state.take_dirty();

    let start = live();
    let mut ids = Vec::new();
    for l in 0..leases {
        let cmd = Command::GrantLease {
            ttl_ms: 600_000,
            owner: format!("raftlock-bench/holds/{l}"),
            identity: String::new(),
            quota: Default::default(),
        };
        match state.apply(index, &Request::new(index, index, cmd)).result {
            Ok(Response::LeaseGranted { lease, .. }) => ids.push(lease),
            other => return Err(format!("GrantLease: {other:?}")),
        }
        index += 1;
    }
    let _ = state.take_dirty();
    let after_leases = live();

    for (l, id) in ids.iter().enumerate() {
        let mut next = 0;
        while next < per {
            let n = BATCH.min(per - next);
            let locks: Vec<LockSpec> = (next..next + n)
                .map(|i| LockSpec {
                    name: format!("holds/{l}/{i}"),
                    mode: Mode::Exclusive,
                })
                .collect();
            let cmd = Command::Acquire {
                lease: *id,
                locks,
                wait: false,
                reason: String::new(),
                metadata: Default::default(),
                lock_delay_ms: 0,
                quota: Default::default(),
            };
            state
                .apply(index, &Request::new(index, index, cmd))
                .result
                .map_err(|e| format!("Acquire: {e}"))?;
            index += 1;
            next += n;
            // The store takes the changed records after every batch of
            // entries; the set is not part of the state at rest.
            let _ = state.take_dirty();
        }
    }
    let after = live();
    let by_size: Vec<isize> = BY_SIZE.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let holds: usize = state.locks().map(|l| l.holds.len()).sum();
    if holds as u64 != leases * per {
        return Err(format!("{holds} holds, expected {}", leases * per));
    }
    let per_hold = |bytes: isize| bytes as f64 / holds as f64;

    println!("{leases} leases x {per} names = {holds} holds, {BATCH} names per Acquire");
    println!(
        "size_of: Hold {} Lock {} Lease {}",
        size_of::<Hold>(),
        size_of::<Lock>(),
        size_of::<Lease>()
    );
    println!(
        "leases: {} B each (before any hold)",
        (after_leases - start) / leases as isize
    );
    let total = after - after_leases;
    println!(
        "holds: {:.0} B per hold in the State (heap, requested bytes), {:.1} MiB in all",
        per_hold(total),
        total as f64 / (1024.0 * 1024.0)
    );

    // --- where the bytes go ---------------------------------------------
    // Each structure allocates blocks of its own size: attribute the live
    // blocks by size. The node sizes are measured (a map of one entry is
    // one leaf; an internal node is a leaf plus 12 child pointers), with
    // the key and value types `State` uses (state.rs: `locks`;
    // types.rs: `Lease::holds`). Update them with those.
    let locks_leaf = {
        let key: Arc<str> = Arc::from("x");
        let lock = Box::new(Lock::new(key.clone(), LockKind::ReadWrite));
        let before = live();
        let m = BTreeMap::from([(key, lock)]);
        let b = (live() - before) as usize;
        drop(m);
        b
    };
    let names_leaf = {
        let name: Arc<str> = Arc::from("x");
        let before = live();
        let m = BTreeSet::from([name]);
        let b = (live() - before) as usize;
        drop(m);
        b
    };
    let internal = |leaf: usize| leaf + 12 * size_of::<usize>();
    let classes: Vec<(&str, Vec<usize>)> = vec![
        (
            "locks map: B-tree nodes",
            vec![locks_leaf, internal(locks_leaf)],
        ),
        ("locks map: the boxed Lock", vec![size_of::<Lock>()]),
        ("Lock.holds: one Hold per holder", vec![size_of::<Hold>()]),
        (
            "Lease.holds: B-tree nodes of the name sets",
            vec![names_leaf, internal(names_leaf)],
        ),
    ];
    let mut parts: Vec<(String, isize)> = Vec::new();
    let mut rest = total;
    let mut taken = vec![false; SIZES];
    for (what, sizes) in &classes {
        let mut bytes = 0;
        for size in sizes {
            if *size < SIZES && !taken[*size] {
                taken[*size] = true;
                bytes += *size as isize * by_size[*size];
            }
        }
        rest -= bytes;
        parts.push((
            format!(
                "{what} ({})",
                sizes
                    .iter()
                    .map(|s| format!("{s} B"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            bytes,
        ));
    }
    let small: isize = (1..=64)
        .filter(|s| !taken[*s])
        .map(|s| s as isize * by_size[s])
        .sum();
    parts.push((
        "strings and small blocks (<= 64 B: names, owners)".into(),
        small,
    ));
    rest -= small;
    parts.push(("other".into(), rest));
    println!(
        "{:<62} {:>8} {:>7}",
        "structure (blocks of these sizes)", "B/hold", "share"
    );
    for (what, bytes) in &parts {
        println!(
            "{what:<62} {:>8.1} {:>6.1}%",
            per_hold(*bytes),
            100.0 * *bytes as f64 / total as f64
        );
    }

    // The sizes that hold the most, counted over the whole load.
    let mut sizes: Vec<(usize, isize)> = by_size
        .iter()
        .enumerate()
        .map(|(size, n)| (size, *n))
        .filter(|(_, n)| *n > 0)
        .collect();
    sizes.sort_by_key(|(size, n)| std::cmp::Reverse(*size as isize * n));
    println!("live allocations by requested size (largest shares):");
    for (size, n) in sizes.iter().take(8) {
        let bytes = *size as isize * n;
        let more = if *size == SIZES - 1 { "+" } else { "" };
        println!(
            "  {size:>5}{more} B x {n:>9} = {:>7.1} B/hold",
            per_hold(bytes)
        );
    }
    drop(state);
    Ok(())
}
