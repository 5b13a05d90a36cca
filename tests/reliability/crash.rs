//! Kill `kiln train` at every file-system operation of a checkpoint save and
//! check that the run directory loads, that `--resume` continues, and that
//! the final weights and optimizer state equal an uninterrupted run's bit
//! for bit (issue 10, defects 1 and 2).
//!
//! The kill is Kiln's own hook (`KILN_CRASH_AT=any:N` aborts the process at
//! its N-th write, fsync, rename or removal; a write is torn in half first),
//! so it runs everywhere. Where `strace` is installed, a few kills are also
//! injected from outside with `strace -e inject=…:signal=KILL`.

use std::path::Path;

use crate::common::*;
use kiln::train::run::{run_training, RunOptions};

const STEPS: &str = "2";

fn args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut a = tiny_args(data, out, STEPS);
    a.extend(["--checkpoint-every", "1", "--keep-checkpoints", "1"]);
    a
}

/// (operation number, kind, path) of every crash point of a whole run.
fn operations(log: &Path) -> Vec<(u64, String, String)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let mut it = l.splitn(3, ' ');
            let kind = it.next().unwrap().to_string();
            let n = it.next().unwrap().parse().unwrap();
            (n, kind, it.next().unwrap_or("").to_string())
        })
        .collect()
}

/// After a kill: the directory loads (when a checkpoint is complete) and
/// `--resume` (in-process) finishes the run with the reference's bits.
fn check_recovers(out: &Path, reference: &Path, what: &str) {
    let current = kiln::train::run_dir::find(out)
        .unwrap_or_else(|e| panic!("{what}: the run directory does not load: {e:#}"));
    let resumed = if current.is_some() {
        let dir = kiln::io::ckpt_store::resolve(out).unwrap();
        kiln::train::checkpoint::load_model(&dir)
            .unwrap_or_else(|e| panic!("{what}: the current checkpoint does not load: {e:#}"));
        run_training(
            gpu(),
            &Default::default(),
            &RunOptions {
                out: out.to_path_buf(),
                resume: true,
                quiet: true,
                ..Default::default()
            },
        )
        .map(|_| ())
    } else {
        // Killed before the first checkpoint: --resume says so; start over.
        let o = run(&["train", "--out", &out.display().to_string(), "--resume"]);
        let err = stderr(&o);
        assert!(
            !o.status.success() && err.contains("--overwrite"),
            "{what}: {err}"
        );
        let data = reference.parent().unwrap().join("text.txt");
        let (d, o2) = (data.display().to_string(), out.display().to_string());
        let mut a = args(&d, &o2);
        a.push("--overwrite");
        let o = run(&a);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        Ok(())
    };
    resumed.unwrap_or_else(|e| panic!("{what}: --resume failed: {e:#}"));
    for f in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            current_file(out, f) == current_file(reference, f),
            "{what}: {f} differs from the uninterrupted run's"
        );
    }
    // The Hugging Face view at the top matches the current checkpoint.
    assert!(
        std::fs::read(out.join("model.safetensors")).unwrap()
            == current_file(out, "model.safetensors"),
        "{what}: the top-level model.safetensors is not the current checkpoint's"
    );
}

#[test]
fn killed_at_every_point_of_a_save_the_run_resumes_bit_exactly() {
    let root = scratch("crash");
    let data = text_file(&root).display().to_string();
    let reference = root.join("reference");
    let log = root.join("ops.log");
    let refs = reference.display().to_string();
    let o = kiln(&args(&data, &refs))
        .env("KILN_CRASH_LOG", &log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ops = operations(&log);
    // Every operation of the second save (and what follows it), plus the
    // first operation of the run and the commit of the first save.
    let second = ops
        .iter()
        .position(|(_, _, p)| p.contains("step-00000002"))
        .expect("a second save");
    let first_commit = ops
        .iter()
        .position(|(_, k, p)| k == "rename" && p.ends_with("step-00000001"))
        .expect("the first commit");
    let mut points: Vec<usize> = vec![0, first_commit];
    points.extend(second..ops.len());
    eprintln!(
        "crash test: {} operations in the run, killing at {} of them",
        ops.len(),
        points.len()
    );
    for &i in &points {
        let (n, kind, path) = &ops[i];
        let what = format!("killed at operation {n} ({kind} {path})");
        let out = root.join(format!("killed-{n}"));
        let outs = out.display().to_string();
        let o = kiln(&args(&data, &outs))
            .env("KILN_CRASH_AT", format!("any:{n}"))
            .output()
            .unwrap();
        assert!(!o.status.success(), "{what}: the process was not killed");
        assert!(
            stderr(&o).contains("KILN_CRASH_AT"),
            "{what}: {}",
            stderr(&o)
        );
        check_recovers(&out, &reference, &what);
        let _ = std::fs::remove_dir_all(&out);
    }
    strace_kills(&root, &data, &reference, &ops);
    let _ = std::fs::remove_dir_all(root);
}

/// The same from outside the process, with strace's fault injection, at the
/// renames of the second save (skipped with a message without strace).
fn strace_kills(root: &Path, data: &str, reference: &Path, ops: &[(u64, String, String)]) {
    let has_strace = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_strace {
        eprintln!("SKIPPED the strace kills: strace is not installed");
        return;
    }
    let renames: Vec<usize> = ops
        .iter()
        .filter(|(_, k, _)| k == "rename")
        .enumerate()
        .filter(|(_, (_, _, p))| p.contains("step-00000002"))
        .map(|(i, _)| i + 1)
        .collect();
    for when in renames {
        let out = root.join(format!("strace-{when}"));
        let outs = out.display().to_string();
        let mut cmd = std::process::Command::new("strace");
        cmd.args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=rename,renameat,renameat2",
            "-e",
            &format!("inject=rename,renameat,renameat2:signal=KILL:when={when}"),
            env!("CARGO_BIN_EXE_kiln"),
        ]);
        cmd.args(args(data, &outs))
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .env_remove("KILN_CRASH_AT");
        let o = cmd.output().unwrap();
        assert!(!o.status.success(), "strace rename {when}: not killed");
        check_recovers(&out, reference, &format!("strace: killed at rename {when}"));
        let _ = std::fs::remove_dir_all(&out);
    }
}
