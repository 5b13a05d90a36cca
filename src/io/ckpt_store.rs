//! Checkpoints as transactions: every file of one save lands, or none does.
//!
//! A run directory keeps its checkpoints under `checkpoints/`, one
//! directory per save:
//!
//! ```text
//! run/checkpoints/step-00000010/{model.safetensors, optimizer.safetensors, …, MANIFEST.json}
//! ```
//!
//! A save writes every file (and fsyncs it) into a hidden directory
//! `checkpoints/.step-00000010.partial.PID.N`, then `MANIFEST.json` naming
//! every file with its length and CRC-32 (zlib's, so `python3 -c "import
//! zlib"` can check it too), then renames the directory to `step-00000010`:
//! that rename is the commit. Loading takes the newest `step-*` directory
//! whose manifest verifies; a damaged or incomplete one is skipped with a
//! warning and the previous one is used. The last `keep` checkpoints stay.
//!
//! After the commit, files the caller names (the Hugging Face view:
//! `model.safetensors`, `config.json`, …) are hard-linked (or copied) to the
//! top of the run directory, each replaced atomically, so
//! `from_pretrained(run)` keeps working. They are a convenience; the
//! manifest is the truth.
//!
//! The store does not know what the files mean: a save is a list of
//! (relative name, bytes). Every file-system operation goes through
//! [`crate::io::crash`], so tests can kill a save at any point.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::crash;

/// The directory under a run that holds its checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Written last into a checkpoint; names every other file.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
const FORMAT: &str = "kiln-checkpoint/1";

/// One file of a save: a relative path (`tokenizer/vocab.json`) and its bytes.
pub type SaveFile = (String, Vec<u8>);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub name: String,
    pub bytes: u64,
    /// CRC-32 (IEEE, as zlib.crc32) of the contents, 8 hex digits.
    pub crc32: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub step: u64,
    pub files: Vec<ManifestEntry>,
}

/// A complete, verified checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub step: u64,
    pub dir: PathBuf,
}

/// What a save needs besides its files.
#[derive(Clone, Debug)]
pub struct SaveOptions<'a> {
    /// Complete checkpoints to keep, this one included (at least 1).
    pub keep: usize,
    /// Files of the save to expose at the top of the run directory.
    pub view: &'a [&'a str],
    /// Files at the top of the run directory to remove once the save is
    /// committed (an older layout's state files, now stale).
    pub obsolete: &'a [&'a str],
}

pub fn crc32_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// `step-00000010`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// A unique suffix for temporary names: `PID.N`.
fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Checks that a manifest's file name stays inside its checkpoint.
fn check_relative(name: &str) -> Result<()> {
    let p = Path::new(name);
    ensure!(
        !name.is_empty()
            && p.components().all(|c| matches!(c, Component::Normal(_)))
            && name != MANIFEST_FILE,
        "file name {name:?} is not a plain relative path inside the checkpoint"
    );
    Ok(())
}

/// Commits one checkpoint of `step` into `run`/checkpoints (see the module
/// docs) and returns its directory.
pub fn save(run: &Path, step: u64, files: &[SaveFile], opts: &SaveOptions) -> Result<PathBuf> {
    for (rel, _) in files {
        check_relative(rel)?;
    }
    let root = run.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let name = step_dir_name(step);
    let tmp = root.join(format!(".{name}.partial.{}", unique()));
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut entries = Vec::with_capacity(files.len());
    for (rel, bytes) in files {
        let path = tmp.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        crash::write_new(&path, bytes)
            .context("saving a checkpoint (the previous one is intact)")?;
        entries.push(ManifestEntry {
            name: rel.clone(),
            bytes: bytes.len() as u64,
            crc32: crc32_hex(bytes),
        });
    }
    for dir in subdirs(files) {
        crash::fsync_dir(&tmp.join(dir));
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        step,
        files: entries,
    };
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    crash::write_new(&tmp.join(MANIFEST_FILE), &json)?;
    crash::fsync_dir(&tmp);

    let dest = root.join(&name);
    // Saving a step that already has a checkpoint (only after a crash right
    // after its commit): move the old one aside under a name that still
    // loads, so there is a complete checkpoint at every moment.
    if dest.exists() {
        crash::rename(&dest, &root.join(format!("{name}.replaced.{}", unique())))?;
    }
    crash::rename(&tmp, &dest)?; // the commit
    crash::fsync_dir(&root);

    update_view(run, &dest, opts.view)?;
    for f in opts.obsolete {
        crash::remove_file(&run.join(f))?;
    }
    prune(run, opts.keep.max(1))?;
    Ok(dest)
}

/// Subdirectories (relative) that `files` create, deepest first.
fn subdirs(files: &[SaveFile]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|(n, _)| Path::new(n).parent().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs.reverse();
    dirs
}

/// Links (or copies) `names` from a committed checkpoint to the top of the
/// run directory, each replaced atomically. A save does it after its
/// commit; a resumed run does it again, in case a crash came in between.
pub fn update_view(run: &Path, ckpt: &Path, names: &[&str]) -> Result<()> {
    let mut dirs = vec![run.to_path_buf()];
    for name in names {
        let (src, dst) = (ckpt.join(name), run.join(name));
        let parent = dst.parent().unwrap_or(run).to_path_buf();
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let file = dst.file_name().unwrap_or_default().to_string_lossy();
        let tmp = parent.join(format!(".{file}.tmp.{}", unique()));
        if std::fs::hard_link(&src, &tmp).is_err() {
            let bytes =
                std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            crash::write_new(&tmp, &bytes)?;
        }
        crash::rename(&tmp, &dst)?;
        if !dirs.contains(&parent) {
            dirs.push(parent);
        }
    }
    for d in dirs {
        crash::fsync_dir(&d);
    }
    Ok(())
}

/// A directory under `checkpoints/` that may hold a checkpoint:
/// `step-N` or `step-N.replaced.*`.
fn candidate_step(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("step-")?;
    let digits = rest.split('.').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every candidate checkpoint directory, newest first (a canonical
/// `step-N` before a `step-N.replaced.*` of the same step).
fn candidates(run: &Path) -> Vec<(u64, bool, PathBuf)> {
    let root = run.join(CHECKPOINTS_DIR);
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&root) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(step) = candidate_step(&name) {
                if e.path().is_dir() {
                    out.push((step, name.contains('.'), e.path()));
                }
            }
        }
    }
    out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    out
}

/// Reads and checks `dir`/MANIFEST.json: every file it names is there with
/// its length and checksum.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(|e| {
        anyhow!(
            "{} cannot be read ({e}): the save was interrupted",
            path.display()
        )
    })?;
    let m = parse_manifest(&text).with_context(|| format!("{} is damaged", path.display()))?;
    for f in &m.files {
        let p = dir.join(&f.name);
        let bytes = std::fs::read(&p).map_err(|e| anyhow!("{} is missing ({e})", p.display()))?;
        ensure!(
            bytes.len() as u64 == f.bytes,
            "{} has {} bytes, the manifest says {}",
            p.display(),
            bytes.len(),
            f.bytes
        );
        let crc = crc32_hex(&bytes);
        ensure!(
            crc == f.crc32,
            "{} has CRC-32 {crc}, the manifest says {}: the file is damaged",
            p.display(),
            f.crc32
        );
    }
    Ok(m)
}

/// A cheap check for pruning: the manifest parses and every file has its
/// length (no checksums; [`verify`] reads everything).
fn looks_complete(dir: &Path) -> bool {
    let Ok(text) = std::fs::read(dir.join(MANIFEST_FILE)) else {
        return false;
    };
    let Ok(m) = parse_manifest(&text) else {
        return false;
    };
    m.files
        .iter()
        .all(|f| std::fs::metadata(dir.join(&f.name)).is_ok_and(|md| md.len() == f.bytes))
}

/// Parses a manifest (no file access).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(bytes).context("not a Kiln checkpoint manifest")?;
    ensure!(
        m.format == FORMAT,
        "manifest format {:?}, this Kiln reads {FORMAT:?}",
        m.format
    );
    for f in &m.files {
        check_relative(&f.name)?;
        ensure!(
            f.crc32.len() == 8 && f.crc32.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}: crc32 {:?} is not 8 hex digits",
            f.name,
            f.crc32
        );
    }
    Ok(m)
}

/// True when `run` has a `checkpoints/` directory with any candidate in it.
pub fn has_checkpoints(run: &Path) -> bool {
    !candidates(run).is_empty()
}

/// The newest complete checkpoint of `run`, or None when it has none at all.
/// Damaged or incomplete ones are skipped with a warning; when every one is
/// damaged the error lists why.
pub fn current(run: &Path) -> Result<Option<Checkpoint>> {
    let cands = candidates(run);
    if cands.is_empty() {
        return Ok(None);
    }
    let mut why = Vec::new();
    for (step, _, dir) in &cands {
        match verify(dir) {
            Ok(m) if m.step == *step => {
                if !why.is_empty() {
                    log::warn!(
                        "{}; using the previous complete checkpoint, {}",
                        why.join("; "),
                        dir.display()
                    );
                }
                return Ok(Some(Checkpoint {
                    step: *step,
                    dir: dir.clone(),
                }));
            }
            Ok(m) => why.push(format!(
                "{} records step {}, not {step}",
                dir.display(),
                m.step
            )),
            Err(e) => why.push(format!("{e:#}")),
        }
    }
    bail!(
        "no complete checkpoint in {}: {}",
        run.join(CHECKPOINTS_DIR).display(),
        why.join("; ")
    )
}

/// The directory to load a model from, given what a user passed: a run
/// directory (its current checkpoint, or the run itself in the older layout
/// or a Hugging Face directory) or one checkpoint directory (verified).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(MANIFEST_FILE).is_file() {
        verify(path)?;
        return Ok(path.to_path_buf());
    }
    if has_checkpoints(path) {
        return Ok(current(path)?.expect("candidates exist").dir);
    }
    Ok(path.to_path_buf())
}

/// Keeps the newest `keep` complete checkpoints and removes the rest, and
/// any leftovers of interrupted saves or removals.
fn prune(run: &Path, keep: usize) -> Result<()> {
    let root = run.join(CHECKPOINTS_DIR);
    let mut kept = 0;
    for (_, _, dir) in candidates(run) {
        let complete = kept < keep && looks_complete(&dir);
        if complete {
            kept += 1;
            continue;
        }
        if kept < keep {
            // Damaged: keep it out of the way of loading, but only remove
            // it once enough complete ones exist.
            continue;
        }
        // Renamed first, so a crash mid-removal never leaves a half-removed
        // directory under a loadable name.
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let doomed = root.join(format!(".{name}.deleting.{}", unique()));
        crash::rename(&dir, &doomed)?;
        crash::remove_dir_all(&doomed)?;
    }
    clean_leftovers(run);
    Ok(())
}

/// Whether process `pid` is running (Linux: /proc; elsewhere: assumed).
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// The PID in a temporary name `….partial.PID.N` / `….tmp.PID.N`.
fn pid_of(name: &str, marker: &str) -> Option<u32> {
    let (_, rest) = name.rsplit_once(marker)?;
    rest.split('.').next()?.parse().ok()
}

/// Removes what interrupted saves left behind: partial checkpoint
/// directories, directories being deleted, and temporary files of
/// processes that are no longer running, in the run directory, its
/// `checkpoints/` and its `tokenizer/`. Failures are only logged.
pub fn clean_leftovers(run: &Path) {
    let mut dirs = vec![
        run.to_path_buf(),
        run.join(CHECKPOINTS_DIR),
        run.join("tokenizer"),
    ];
    dirs.dedup();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                continue;
            }
            let stale = if name.contains(".deleting.") {
                pid_of(&name, ".deleting.").is_some_and(|p| !alive(p) || p == std::process::id())
            } else if name.contains(".partial.") {
                pid_of(&name, ".partial.").is_some_and(|p| !alive(p))
            } else if name.contains(".tmp.") {
                pid_of(&name, ".tmp.").is_some_and(|p| !alive(p))
            } else {
                false
            };
            if !stale {
                continue;
            }
            let p = e.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => log::info!("removed {}, left by an interrupted save", p.display()),
                Err(e) => log::warn!("cannot remove {}: {e}", p.display()),
            }
        }
    }
}

#[cfg(test)]
#[path = "ckpt_store_tests.rs"]
mod tests;
