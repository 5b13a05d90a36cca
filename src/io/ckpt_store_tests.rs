//! The checkpoint store without a GPU: commits, keep-last-N, the view,
//! verification and fallback, leftovers, manifest names.

use super::*;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files(step: u64) -> Vec<SaveFile> {
    vec![
        (
            "model.bin".into(),
            format!("weights of step {step}").into_bytes(),
        ),
        (
            "state.json".into(),
            format!("{{\"step\":{step}}}").into_bytes(),
        ),
        ("tok/vocab.txt".into(), b"a b c".to_vec()),
    ]
}

const VIEW: &[&str] = &["model.bin", "tok/vocab.txt"];

fn save_n(run: &Path, step: u64, keep: usize) -> PathBuf {
    save(
        run,
        step,
        &files(step),
        &SaveOptions {
            keep,
            view: VIEW,
            obsolete: &["state.json"],
        },
    )
    .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn saves_keep_the_newest_and_the_view_follows() {
    let run = scratch("keep");
    assert_eq!(current(&run).unwrap(), None);
    std::fs::write(run.join("state.json"), "old layout").unwrap();
    for step in 1..=4 {
        save_n(&run, step, 2);
    }
    assert_eq!(
        names(&run.join(CHECKPOINTS_DIR)),
        ["step-00000003", "step-00000004"]
    );
    let c = current(&run).unwrap().unwrap();
    assert_eq!(c.step, 4);
    let m = verify(&c.dir).unwrap();
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.files[0].crc32, crc32_hex(b"weights of step 4"));
    assert_eq!(
        std::fs::read(run.join("model.bin")).unwrap(),
        b"weights of step 4"
    );
    assert_eq!(std::fs::read(run.join("tok/vocab.txt")).unwrap(), b"a b c");
    assert!(
        !run.join("state.json").exists(),
        "obsolete top-level file removed"
    );
    assert_eq!(resolve(&run).unwrap(), c.dir);
    assert_eq!(resolve(&c.dir).unwrap(), c.dir);
    // zlib.crc32(b"123456789") == 0xcbf43926
    assert_eq!(crc32_hex(b"123456789"), "cbf43926");
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn a_damaged_checkpoint_falls_back_to_the_previous_one() {
    let run = scratch("fallback");
    save_n(&run, 1, 3);
    save_n(&run, 2, 3);
    let newest = run.join(CHECKPOINTS_DIR).join("step-00000002");
    std::fs::write(newest.join("model.bin"), "weights of step 9").unwrap();
    let c = current(&run).unwrap().unwrap();
    assert_eq!(c.step, 1, "same length, other bytes: the CRC catches it");
    std::fs::remove_file(newest.join(MANIFEST_FILE)).unwrap();
    assert_eq!(current(&run).unwrap().unwrap().step, 1);
    // Every checkpoint damaged: an error that says why for each.
    let first = run.join(CHECKPOINTS_DIR).join("step-00000001");
    std::fs::remove_file(first.join("state.json")).unwrap();
    let e = format!("{:#}", current(&run).unwrap_err());
    assert!(
        e.contains("no complete checkpoint")
            && e.contains("state.json")
            && e.contains("interrupted"),
        "{e}"
    );
    // A new save still works, and prunes the damaged ones once it can.
    save_n(&run, 3, 1);
    assert_eq!(names(&run.join(CHECKPOINTS_DIR)), ["step-00000003"]);
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn resaving_a_step_keeps_a_complete_checkpoint_at_every_moment() {
    let run = scratch("resave");
    save_n(&run, 5, 1);
    save_n(&run, 5, 1);
    assert_eq!(names(&run.join(CHECKPOINTS_DIR)), ["step-00000005"]);
    assert_eq!(candidate_step("step-00000005.replaced.1.2"), Some(5));
    assert_eq!(candidate_step(".step-00000005.partial.1.2"), None);
    assert_eq!(candidate_step("step-"), None);
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn leftovers_of_dead_processes_are_removed() {
    let run = scratch("leftovers");
    save_n(&run, 1, 2);
    let root = run.join(CHECKPOINTS_DIR);
    let dead = 999_999_999u32;
    let partial = root.join(format!(".step-00000002.partial.{dead}.0"));
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.bin"), "half").unwrap();
    let tmp = run.join(format!(".model.bin.tmp.{dead}.3"));
    std::fs::write(&tmp, "x").unwrap();
    let mine = run.join(format!(".model.bin.tmp.{}.3", std::process::id()));
    std::fs::write(&mine, "x").unwrap();
    // A partial directory is never a checkpoint.
    assert_eq!(current(&run).unwrap().unwrap().step, 1);
    clean_leftovers(&run);
    assert!(!partial.exists() && !tmp.exists());
    assert!(mine.exists(), "a live process's temporary file stays");
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn manifest_names_must_stay_inside_the_checkpoint() {
    let m = |name: &str| {
        format!(
            r#"{{"format":"{FORMAT}","step":1,"files":[{{"name":"{name}","bytes":1,"crc32":"00000000"}}]}}"#
        )
    };
    assert!(parse_manifest(m("a/b.json").as_bytes()).is_ok());
    for bad in [
        "../x",
        "/etc/passwd",
        "a/../../x",
        "",
        "MANIFEST.json",
        "./a",
    ] {
        assert!(parse_manifest(m(bad).as_bytes()).is_err(), "{bad:?}");
    }
    let run = scratch("badname");
    let e = save(
        &run,
        1,
        &[("../evil".into(), vec![1])],
        &SaveOptions {
            keep: 1,
            view: &[],
            obsolete: &[],
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("../evil"), "{e}");
    std::fs::remove_dir_all(run).unwrap();
}
