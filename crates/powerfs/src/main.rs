//! `powerfs MOUNTPOINT`: mounts powerfs, prints `powerfs: mounted at MOUNTPOINT`
//! on stdout once it is usable, serves until SIGTERM or SIGINT, then unmounts
//! and exits 0. Power is controlled through `MOUNTPOINT/.powerfs`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: powerfs MOUNTPOINT\n\
\n\
Mounts an in-memory filesystem that simulates power loss (needs root).\n\
Write `cut`, `on` or `cycle` to MOUNTPOINT/.powerfs to control the power,\n\
`hold` or `release` to hold every fsync unanswered or perform and answer\n\
them; read it for counters. SIGTERM or SIGINT unmounts and exits.";

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let mountpoint = match args.as_slice() {
        [a] if a == "-h" || a == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [a] if !a.as_encoded_bytes().starts_with(b"-") => PathBuf::from(a),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !mountpoint.is_dir() {
        eprintln!(
            "powerfs: {}: not a directory\n{USAGE}",
            mountpoint.display()
        );
        return ExitCode::from(2);
    }

    // Block the stop signals in every thread (threads spawned later inherit the
    // mask) and wait for them synchronously below: no async handler, and the
    // unmount runs on the main thread with the normal stack.
    let signals = match block_stop_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("powerfs: cannot block signals: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mount = match powerfs::mount(&mountpoint) {
        Ok(m) => m,
        Err(e) => {
            let hint = match powerfs::available() {
                Ok(()) => String::new(),
                Err(why) => format!(" ({why})"),
            };
            eprintln!(
                "powerfs: cannot mount at {}: {e}{hint}",
                mountpoint.display()
            );
            return ExitCode::FAILURE;
        }
    };
    mount.set_verbose(true);

    // The harness waits for exactly this line. Errors are ignored: a reader
    // that went away must not make us panic while still mounted.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "powerfs: mounted at {}", mountpoint.display());
    let _ = out.flush();
    drop(out);

    let signal = wait_for(&signals);
    eprintln!(
        "powerfs: got signal {signal}, unmounting {}",
        mountpoint.display()
    );
    match mount.unmount() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("powerfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn block_stop_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it, and
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

fn wait_for(set: &libc::sigset_t) -> i32 {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is an initialised sigset_t and `sig` a valid out pointer.
        let rc = unsafe { libc::sigwait(set, &mut sig) };
        if rc == 0 {
            return sig;
        }
        // sigwait only fails with EINVAL for a bad set, which cannot happen
        // here; retry rather than exit still mounted.
    }
}
