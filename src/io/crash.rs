//! Crash points: a test hook that kills the process in the middle of a
//! checkpoint save, at a chosen file-system operation.
//!
//! `KILN_CRASH_AT=<kind>:<n>` aborts the process at the n-th (from 1)
//! operation of that kind done through this module, where kind is `write`,
//! `fsync`, `rename`, `remove` or `any` (every kind counted together). A
//! `write` crash first writes half of the bytes, so the file is torn, as
//! after a power cut; the others abort just before the operation.
//! `KILN_CRASH_LOG=<path>` appends one line per operation (`kind n path`),
//! so a test can count a save's operations before it crashes them one by one.
//!
//! Without those variables every function here is the plain operation.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use anyhow::{Context, Result};

/// The file-system operations a crash can be injected at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write,
    Fsync,
    Rename,
    Remove,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Fsync => "fsync",
            Op::Rename => "rename",
            Op::Remove => "remove",
        }
    }
}

struct Plan {
    /// None = any kind.
    kind: Option<&'static str>,
    at: u64,
}

fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let v = std::env::var("KILN_CRASH_AT").ok()?;
        let (kind, n) = v.split_once(':')?;
        let kind = match kind {
            "any" => None,
            "write" => Some("write"),
            "fsync" => Some("fsync"),
            "rename" => Some("rename"),
            "remove" => Some("remove"),
            _ => return None,
        };
        Some(Plan {
            kind,
            at: n.parse().ok()?,
        })
    })
    .as_ref()
}

static ANY: AtomicU64 = AtomicU64::new(0);
static BY_KIND: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Counts `op` on `path`; true when the process must crash there.
fn reached(op: Op, path: &Path) -> bool {
    let n_any = ANY.fetch_add(1, Ordering::SeqCst) + 1;
    let n_kind = BY_KIND[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
    if let Ok(log) = std::env::var("KILN_CRASH_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{} {n_any} {}", op.name(), path.display());
        }
    }
    match plan() {
        Some(p) => match p.kind {
            None => n_any == p.at,
            Some(k) => k == op.name() && n_kind == p.at,
        },
        None => false,
    }
}

fn die(op: Op, path: &Path) -> ! {
    eprintln!(
        "kiln: KILN_CRASH_AT: crashing at {} of {}",
        op.name(),
        path.display()
    );
    std::process::abort()
}

/// Creates `path` (which must not exist) holding `bytes`, and fsyncs it.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    write_all(&mut f, path, bytes)?;
    fsync(&f, path)
}

/// Writes `bytes` to an open file (a crash point: a torn write).
pub fn write_all(f: &mut File, path: &Path, bytes: &[u8]) -> Result<()> {
    if reached(Op::Write, path) {
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        die(Op::Write, path);
    }
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Flushes a file to disk (a crash point).
pub fn fsync(f: &File, path: &Path) -> Result<()> {
    if reached(Op::Fsync, path) {
        die(Op::Fsync, path);
    }
    f.sync_all()
        .with_context(|| format!("cannot flush {} to disk", path.display()))
}

/// Flushes a directory's entries (a crash point). Some file systems refuse
/// to fsync directories; that is only worth a warning, the data is written.
pub fn fsync_dir(dir: &Path) {
    if reached(Op::Fsync, dir) {
        die(Op::Fsync, dir);
    }
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        log::warn!("fsync of directory {} failed: {e}", dir.display());
    }
}

/// Renames `from` to `to`, replacing a file (or an empty directory) there
/// (a crash point).
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    if reached(Op::Rename, to) {
        die(Op::Rename, to);
    }
    std::fs::rename(from, to)
        .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))
}

/// Removes a directory tree (a crash point).
pub fn remove_dir_all(dir: &Path) -> Result<()> {
    if reached(Op::Remove, dir) {
        die(Op::Remove, dir);
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))
}

/// Removes a file (a crash point); a file already gone is fine.
pub fn remove_file(path: &Path) -> Result<()> {
    if reached(Op::Remove, path) {
        die(Op::Remove, path);
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}
