//! Crash-safe file replacement.
//!
//! [`write_atomic`] writes the new contents to a uniquely named temporary
//! file in the target's directory, flushes it to disk, then renames it over
//! the target. A reader (or a run restarted after a crash or power loss)
//! sees either the complete old file or the complete new one, never a
//! truncated mix.

use std::fs::{self, File, OpenOptions};
use std::io;
#[cfg(test)]
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, Context, Result};

use super::crash;
use serde::Serialize;

/// Replaces `path` with `bytes` atomically (write temp → fsync → rename →
/// fsync directory). On any error the temporary file is removed and the old
/// contents of `path`, if any, are left untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, crash::rename)
}

/// Serialises `value` as pretty JSON (with a trailing newline) and writes it
/// with [`write_atomic`].
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .with_context(|| format!("serialising JSON for {}", path.display()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// The directory a relative or absolute `path` lives in ("." for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// [`write_atomic`] with the rename step injectable, so tests can make it fail.
fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    rename: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("cannot write {}: the path has no file name", path.display()))?;
    if path.is_dir() {
        return Err(anyhow!(
            "cannot write {}: it is a directory; pass a file path",
            path.display()
        ));
    }

    let (tmp, mut file) = create_temp(dir, &name.to_string_lossy())
        .with_context(|| format!("cannot write {}: creating a temporary file in {} failed (does the directory exist and is it writable?)", path.display(), dir.display()))?;

    let result = (|| -> Result<()> {
        crash::write_all(&mut file, &tmp, bytes)?;
        crash::fsync(&file, &tmp)?;
        drop(file);
        rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e.context(format!(
            "writing {} failed; the previous file (if any) is unchanged",
            path.display()
        )));
    }
    crash::fsync_dir(dir);
    Ok(())
}

/// Creates a new file `.NAME.tmp.PID.N` in `dir`, never reusing an existing name.
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{pid}.{n}"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            // Left over from a crashed process that had our pid: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-atomic-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_replaces() {
        let dir = scratch("replace");
        let p = dir.join("a.txt");
        write_atomic(&p, b"first").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        write_atomic(&p, b"second, longer").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second, longer");
        assert_eq!(entries(&dir), vec!["a.txt"], "no temp files left behind");
        write_json_atomic(&dir.join("b.json"), &serde_json::json!({"step": 3})).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("b.json")).unwrap()).unwrap();
        assert_eq!(v["step"], 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_rename_keeps_old_file_and_cleans_up() {
        let dir = scratch("fail");
        let p = dir.join("ckpt.bin");
        write_atomic(&p, b"old complete contents").unwrap();
        // The new bytes reach the temp file, then the "crash": the rename fails.
        let mut seen_tmp = None;
        let err = write_atomic_with(&p, b"new", |tmp, _| {
            assert_eq!(
                fs::read(tmp).unwrap(),
                b"new",
                "temp holds the full new data"
            );
            seen_tmp = Some(tmp.to_path_buf());
            Err(anyhow!("simulated crash before rename"))
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("ckpt.bin") && msg.contains("unchanged"),
            "{msg}"
        );
        assert_eq!(fs::read(&p).unwrap(), b"old complete contents");
        assert!(!seen_tmp.unwrap().exists());
        assert_eq!(entries(&dir), vec!["ckpt.bin"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn crash_after_temp_write_leaves_target_intact() {
        // A process killed after writing the temp file but before the rename
        // leaves a stray temp file; the target is still the old, whole file,
        // and the next write does not trip over the stray file.
        let dir = scratch("crash");
        let p = dir.join("state.json");
        write_atomic(&p, b"{\"ok\":1}").unwrap();
        let (tmp, mut f) = create_temp(&dir, "state.json").unwrap();
        f.write_all(b"{\"ok\":").unwrap(); // half-written, never renamed
        drop(f);
        assert_eq!(fs::read(&p).unwrap(), b"{\"ok\":1}");
        write_atomic(&p, b"{\"ok\":2}").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{\"ok\":2}");
        assert!(tmp.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_path() {
        let dir = scratch("errors");
        let missing = dir.join("no/such/dir/file.txt");
        let msg = format!("{:#}", write_atomic(&missing, b"x").unwrap_err());
        assert!(msg.contains("no/such/dir/file.txt"), "{msg}");
        let msg = format!("{:#}", write_atomic(&dir, b"x").unwrap_err());
        assert!(msg.contains("directory"), "{msg}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
