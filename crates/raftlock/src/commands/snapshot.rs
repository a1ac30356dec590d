//! `raftlock snapshot save FILE` (a backup of the whole cluster, through
//! the client's `save_snapshot`) and `raftlock snapshot restore FILE`
//! (offline: the data directory of one node of a NEW cluster made from it).
//! docs/operations.md, "Backup and restore".

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use raftlock_client::Backup;
use raftlock_node::restore;
use sha2::{Digest, Sha256};

use crate::commands::Conn;
use crate::config::parse_peers_flag;
use crate::exit::{Failure, client_failure};
use crate::output::print_json;
use crate::runner;

/// How long a save may take (the copy, its encoding and the transfer).
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup of the whole cluster state to FILE (written with mode
    /// 0600 through FILE.tmp, fsynced, then renamed: FILE is either the old
    /// one or the complete new one). The leader makes one consistent copy
    /// that includes every write acknowledged before the call. A backup
    /// holds every lease's identity and every hold's metadata: keep it
    /// private.
    Save {
        /// Where to write the backup.
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Prepare the data directory of one node of a NEW cluster from a
    /// backup (offline; run it for every node, with the same FILE, --peers
    /// and --token-floor, then start each node with `raftlock serve` and
    /// the same --id, --data-dir and --peers). Holds and leases come back
    /// with their tokens; every lease's ttl restarts when the new cluster
    /// elects its leader. Writes made after the backup are gone.
    Restore {
        /// The backup made by `raftlock snapshot save`.
        file: PathBuf,
        /// The new node's data directory: must not exist or be empty.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The new node's id (one of --peers).
        #[arg(long, value_name = "N")]
        id: u64,
        /// Every node of the new cluster, id=host:port of its PEER
        /// listener, as `raftlock serve --peers` will get it.
        #[arg(long, value_name = "ID=HOST:PORT,...")]
        peers: String,
        /// Every token the new cluster hands out is above this too (give
        /// the token_high_water of the cluster being replaced, when it may
        /// have raised its epoch after this backup). [default: 0]
        #[arg(long, value_name = "N", default_value_t = 0)]
        token_floor: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: SnapshotArgs) -> Result<(), Failure> {
    match args.command {
        SnapshotCommand::Save { file, conn } => save(&file, &conn),
        SnapshotCommand::Restore {
            file,
            data_dir,
            id,
            peers,
            token_floor,
            json,
        } => restore(&file, &data_dir, id, &peers, token_floor, json),
    }
}

fn io_failure(what: &str, path: &Path, e: std::io::Error) -> Failure {
    Failure::Runtime(format!("{what} {}: {e}", path.display()))
}

fn save(file: &Path, conn: &Conn) -> Result<(), Failure> {
    let rt = runner::control_runtime()?;
    let backup = rt.block_on(async {
        let client = conn.client_with(SAVE_TIMEOUT).await?;
        client
            .save_snapshot()
            .await
            .map_err(|e| client_failure(&e, "", None))
    })?;
    let bytes = backup.to_bytes();
    write_atomically(file, &bytes)?;
    let h = &backup.header;
    if conn.json {
        print_json(
            &serde_json::json!({
                "file": file.display().to_string(),
                "bytes": bytes.len(),
                "sha256": Backup::file_sha256(&bytes),
                "cluster_id": h.cluster_id,
                "index": h.index,
                "term": h.term,
                "voters": h.voters,
                "token_epoch": h.token_epoch,
                "token_high_water": h.token_high_water,
                "leases": h.leases,
                "locks": h.locks,
            }),
            true,
        )
    } else {
        println!("saved {} ({} bytes)", file.display(), bytes.len());
        println!("cluster   {}", h.cluster_id);
        println!("index     {} (term {})", h.index, h.term);
        println!(
            "tokens    epoch {}, high water {}",
            h.token_epoch, h.token_high_water
        );
        println!("leases    {}\nlocks     {}", h.leases, h.locks);
        Ok(())
    }
}

/// FILE.tmp (0600), written and fsynced, renamed over FILE, then the
/// directory fsynced: after a crash FILE is the old file or the whole new
/// one, never a torn one.
fn write_atomically(file: &Path, bytes: &[u8]) -> Result<(), Failure> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut tmp_name = file.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_failure("cannot create", &tmp, e))?;
    // A FILE.tmp left by an earlier run keeps its mode: set it.
    out.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_failure("cannot restrict", &tmp, e))?;
    out.write_all(bytes)
        .and_then(|()| out.sync_all())
        .map_err(|e| io_failure("cannot write", &tmp, e))?;
    drop(out);
    std::fs::rename(&tmp, file).map_err(|e| io_failure("cannot rename to", file, e))?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_failure("cannot sync the directory", dir, e))?;
    Ok(())
}

fn restore(
    file: &Path,
    data_dir: &Path,
    id: u64,
    peers_text: &str,
    token_floor: u64,
    json: bool,
) -> Result<(), Failure> {
    let peers = parse_peers_flag("peers", peers_text)?;
    if !peers.contains_key(&id) {
        return Err(Failure::Usage(format!(
            "--peers names nodes {:?} but not --id {id}",
            peers.keys().collect::<Vec<_>>()
        )));
    }
    let floor_epoch = if token_floor == 0 {
        0
    } else {
        raftlock_core::epoch_above(token_floor).ok_or_else(|| {
            Failure::Usage(format!(
                "--token-floor {token_floor} is in the last token epoch; no epoch is above it"
            ))
        })?
    };
    // Refused before anything is read or written: a restore never touches
    // a directory that may hold a node's data.
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if let Some(entry) = entries.next() {
                let name = entry
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .unwrap_or_default();
                let holds_store = data_dir.join(restore::MARKER_FILE).exists();
                return Err(Failure::Usage(format!(
                    "{} is not empty ({}): restore only into a new, empty data directory",
                    data_dir.display(),
                    if holds_store {
                        "it holds a raftlock store".to_string()
                    } else {
                        format!("it holds {name:?}")
                    }
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_failure("cannot read", data_dir, e)),
    }

    let bytes = std::fs::read(file).map_err(|e| io_failure("cannot read", file, e))?;
    let backup = Backup::from_bytes(&bytes)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", file.display())))?;
    let (last_applied, state) = restore::decode_snapshot_copy(&backup.data)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", file.display())))?;
    let index = last_applied.map_or(0, |l| l.index);
    if index != backup.header.index || index != state.last_applied() {
        return Err(Failure::Runtime(format!(
            "{}: the header says index {}, the data holds index {index} (state at {})",
            file.display(),
            backup.header.index,
            state.last_applied()
        )));
    }
    let epoch = state
        .token_epoch()
        .checked_add(1)
        .ok_or_else(|| {
            Failure::Runtime(
                "the backup is in the last token epoch (65535): it cannot be raised".into(),
            )
        })?
        .max(floor_epoch);
    // The same file, epoch and peers give every node the same id; other
    // arguments give another cluster, whose nodes refuse these.
    let cluster_id = {
        let mut h = Sha256::new();
        h.update(Backup::file_sha256(&bytes).as_bytes());
        h.update(epoch.to_be_bytes());
        for (peer, addr) in &peers {
            h.update(peer.to_be_bytes());
            h.update(addr.as_bytes());
            h.update([0]);
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        hex[..32].to_string()
    };

    // Prepared beside DIR and renamed onto it once synced: a crash midway
    // leaves DIR as it was (absent or empty), never a half-made store that
    // `serve` would take for a new one.
    let staging = staging_dir(data_dir)?;
    if staging.exists() {
        // Left by a restore that did not finish: ours to remove.
        std::fs::remove_dir_all(&staging)
            .map_err(|e| io_failure("cannot remove the unfinished", &staging, e))?;
    }
    let (leases, locks) = (state.lease_count(), state.lock_count());
    let rt = runner::control_runtime()?;
    let prepared = rt
        .block_on(restore::prepare_from_backup(
            &staging,
            restore::StoreOptions::default(),
            state,
            index,
            cluster_id,
            epoch,
            &peers,
        ))
        .map_err(|e| Failure::Runtime(format!("restore into {}: {e}", staging.display())))?;
    // The store flushed everything it wrote; the rename and the parent's
    // entry are made durable here.
    std::fs::rename(&staging, data_dir)
        .map_err(|e| io_failure("cannot rename the prepared store to", data_dir, e))?;
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_failure("cannot sync the directory", parent, e))?;
    if json {
        print_json(
            &serde_json::json!({
                "data_dir": data_dir.display().to_string(),
                "id": id,
                "cluster_id": prepared.cluster_id,
                "index": index,
                "token_epoch": prepared.token_epoch,
                "leases": leases,
                "locks": locks,
            }),
            true,
        )
    } else {
        println!(
            "prepared {} for node {id} of cluster {}",
            data_dir.display(),
            prepared.cluster_id
        );
        println!("index     {index}");
        println!("tokens    epoch {}", prepared.token_epoch);
        println!("leases    {leases}\nlocks     {locks}");
        println!(
            "start it: raftlock serve --id {id} --data-dir {} --peers {peers_text} (and its listen and TLS flags)",
            data_dir.display()
        );
        Ok(())
    }
}

/// `DIR.restoring` beside `data_dir` (same file system, so the final
/// rename is atomic); its parent is created if missing.
fn staging_dir(data_dir: &Path) -> Result<PathBuf, Failure> {
    let Some(name) = data_dir.file_name() else {
        return Err(Failure::Usage(format!(
            "--data-dir {} has no directory name to restore into",
            data_dir.display()
        )));
    };
    let mut staged = name.to_os_string();
    staged.push(".restoring");
    let staging = data_dir.with_file_name(staged);
    if let Some(parent) = staging.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_failure("cannot create", parent, e))?;
    }
    Ok(staging)
}
