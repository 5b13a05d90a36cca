//! `metrics.jsonl`: one JSON object per line, appended as training goes.
//!
//! Each line is written with a single `write` and flushed, so a crash loses
//! at most the line being written; a torn last line (no trailing newline) is
//! skipped by [`read_metrics`] and cut off when the log is reopened. A
//! resumed run calls [`MetricsLog::truncate_after_step`] with the step of its
//! checkpoint so the steps it redoes are not logged twice.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::atomic::write_atomic;

/// An append-only JSON-lines log.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Starts a new log at `path`, replacing any old one (a fresh run).
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot create metrics log {}", path.display()))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens `path` for appending (a resumed run), creating it if missing.
    /// A torn last line left by a crash is removed first.
    pub fn open_append(path: &Path) -> Result<Self> {
        if path.exists() {
            let bytes = fs::read(path)
                .with_context(|| format!("cannot read metrics log {}", path.display()))?;
            let keep = complete_prefix_len(&bytes);
            if keep < bytes.len() {
                log::warn!(
                    "{}: dropping a torn last line ({} bytes) left by an interrupted run",
                    path.display(),
                    bytes.len() - keep
                );
                write_atomic(path, &bytes[..keep])?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open metrics log {} for appending", path.display()))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line and flushes it.
    pub fn log(&mut self, record: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.flush())
            .with_context(|| format!("cannot append to metrics log {}", self.path.display()))
    }

    /// Drops every record whose `"step"` is greater than `step` (records
    /// without a step are kept), so a run resumed from the checkpoint at
    /// `step` does not log the redone steps twice. Returns how many records
    /// were dropped. The file is rewritten atomically.
    pub fn truncate_after_step(&mut self, step: u64) -> Result<usize> {
        let bytes = fs::read(&self.path)
            .with_context(|| format!("cannot read metrics log {}", self.path.display()))?;
        let text = String::from_utf8_lossy(&bytes[..complete_prefix_len(&bytes)]).into_owned();
        let mut kept = String::with_capacity(text.len());
        let mut dropped = 0;
        for line in text.lines() {
            let later = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_f64))
                .is_some_and(|s| s > step as f64);
            if later {
                dropped += 1;
            } else {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        write_atomic(&self.path, kept.as_bytes())?;
        // The rename replaced the file: reopen to append to the new one.
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot reopen metrics log {}", self.path.display()))?;
        Ok(dropped)
    }
}

/// Length of `bytes` up to and including the last newline.
fn complete_prefix_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// Reads every record of a metrics log. Blank lines and a torn last line
/// (from a crash) are skipped; any other bad line is an error naming it.
pub fn read_metrics(path: &Path) -> Result<Vec<Value>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no metrics log at {}: pass the run directory of a training run",
            path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read metrics log {}", path.display()))
        }
    };
    let mut out = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => out.push(v),
            Err(_) if !line.ends_with('\n') => {
                log::warn!("{}: skipping a torn last line", path.display());
            }
            Err(e) => bail!(
                "{}:{}: not a JSON record ({e}); fix or delete that line",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-metrics-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn steps(path: &Path) -> Vec<u64> {
        read_metrics(path)
            .unwrap()
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn log_resume_truncate() {
        let dir = scratch("resume");
        let p = dir.join("metrics.jsonl");
        let mut log = MetricsLog::create(&p).unwrap();
        for s in 1..=5 {
            log.log(&json!({"step": s, "loss": 10.0 / s as f64}))
                .unwrap();
        }
        // Visible on disk without dropping the log: each line is flushed.
        assert_eq!(steps(&p), vec![1, 2, 3, 4, 5]);
        drop(log);

        // Resume from the checkpoint at step 3: steps 4 and 5 are redone.
        let mut log = MetricsLog::open_append(&p).unwrap();
        assert_eq!(log.truncate_after_step(3).unwrap(), 2);
        for s in 4..=6 {
            log.log(&json!({"step": s, "loss": 1.0})).unwrap();
        }
        assert_eq!(steps(&p), vec![1, 2, 3, 4, 5, 6]);

        // create() starts over.
        let mut log = MetricsLog::create(&p).unwrap();
        log.log(&json!({"step": 1})).unwrap();
        assert_eq!(steps(&p), vec![1]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_and_bad_lines() {
        let dir = scratch("torn");
        let p = dir.join("metrics.jsonl");
        fs::write(&p, "{\"step\":1}\n\n{\"step\":2}\n{\"step\":3,\"lo").unwrap();
        assert_eq!(steps(&p), vec![1, 2], "torn last line skipped");
        let mut log = MetricsLog::open_append(&p).unwrap();
        log.log(&json!({"step": 3})).unwrap();
        assert_eq!(steps(&p), vec![1, 2, 3], "torn line cut before appending");
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "{\"step\":1}\n\n{\"step\":2}\n{\"step\":3}\n"
        );

        fs::write(&p, "{\"step\":1}\nnot json\n{\"step\":2}\n").unwrap();
        let e = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(e.contains("metrics.jsonl:2"), "{e}");
        let e = format!("{:#}", read_metrics(&dir.join("nope.jsonl")).unwrap_err());
        assert!(
            e.contains("no metrics log at") && e.contains("nope.jsonl"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
