//! The matmul autotuner: for each shape a graph multiplies, time the
//! candidate [`MatmulVariant`]s once on this adapter, keep the fastest, and
//! remember it on disk per adapter, driver and matmul shader, so later runs
//! start with the measured choice.
//!
//! Every variant gives the same bits (one fma per k in increasing k order;
//! tested in kernels-tests `every_variant_gives_the_same_bits`), so a choice
//! changes speed, never results: a run resumed after tuning continues
//! bit-exactly.
//!
//! `KILN_TUNE` (or [`set_mode`], e.g. from `--tune`):
//! - unset: use the choices on disk where they exist, tune nothing;
//! - `1` / `on`: also tune every shape without a choice, at its first use
//!   (this compiles every candidate: seconds per shape on lavapipe);
//! - `0` / `off`: ignore the file, [`default_variant`](super::matmul::default_variant) everywhere.
//!
//! The file lives in `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else
//! `~/.cache/kiln`, named `matmul-tune-<hash>.json` (the hash of the adapter
//! description and the shader source). Browsers have no such file and no
//! blocking timer: there the default variants run.

use super::matmul::{MatmulSpec, MatmulVariant};
use crate::runtime::Gpu;

/// Whether to use and extend the tuned choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneMode {
    /// The default variants only.
    Off,
    /// Choices from disk; shapes without one get the default variant.
    Cached,
    /// Choices from disk; shapes without one are tuned at first use.
    Tune,
}

/// The shape class a choice is stored under: batch, M×N×K, the transposes
/// and whether each operand can be read with vec4 loads.
pub fn shape_key(spec: &MatmulSpec) -> String {
    let (va, vb) = super::matmul::vec4_operands(spec, true);
    let t = |x: bool| if x { 'T' } else { 'N' };
    let v = |x: bool| if x { 'v' } else { 's' };
    format!(
        "{}x{}x{} b{} {}{} {}{}",
        spec.m,
        spec.n,
        spec.k,
        spec.batch,
        t(spec.trans_a),
        t(spec.trans_b),
        v(va),
        v(vb)
    )
}

/// The variants the tuner times for `spec` on this adapter.
///
/// GPUs: every workgroup-memory (`Tiled`) variant. CPU adapters: those, plus
/// `Direct` with the largest register tile for products of at least 128³
/// multiply-adds (its compile costs 4–10 s on lavapipe, too much to try on
/// tiny shapes), at most 8 wide with a transposed A (Mesa 22.3 leaks host
/// memory on every dispatch of the 16-wide transposed-A kernel).
pub fn candidates(gpu: &Gpu, spec: &MatmulSpec) -> Vec<MatmulVariant> {
    let mut list: Vec<MatmulVariant> = super::matmul::variants()
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| matches!(v, MatmulVariant::Tiled { .. }))
        .collect();
    if gpu.is_cpu() && spec.m * spec.n * spec.k >= 128 * 128 * 128 {
        let side = if spec.trans_a { 8 } else { 16 };
        list.push(MatmulVariant::Direct {
            tm: side,
            tn: side,
            vec4: true,
        });
    }
    let def = super::matmul::default_variant(gpu, spec);
    if !list.contains(&def) {
        list.push(def);
    }
    list
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

/// Browsers: no tuning, no file.
#[cfg(target_arch = "wasm32")]
pub fn choice(_gpu: &Gpu, _spec: &MatmulSpec) -> Option<MatmulVariant> {
    None
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::collections::{BTreeMap, HashMap};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    use anyhow::{Context, Result};
    use serde::{Deserialize, Serialize};

    use super::{candidates, shape_key, TuneMode};
    use crate::kernels::matmul::{matmul_with, MatmulSpec, MatmulVariant};
    use crate::runtime::{DType, Dispatch, Gpu};

    /// One tuned shape: the winner and what it and the default measured.
    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
    pub struct TunedChoice {
        pub variant: MatmulVariant,
        /// Milliseconds per run of the winner and of the default variant.
        pub ms: f64,
        pub default_ms: f64,
    }

    /// The tuned choices of one adapter, as stored on disk.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    pub struct TuneFile {
        /// `Gpu::describe()`: adapter, backend, driver and driver version.
        pub adapter: String,
        pub choices: BTreeMap<String, TunedChoice>,
    }

    struct Table {
        path: Option<PathBuf>,
        file: TuneFile,
    }

    // 0: read KILN_TUNE on first use.
    static MODE: AtomicU8 = AtomicU8::new(0);
    static TABLES: OnceLock<Mutex<HashMap<String, Table>>> = OnceLock::new();

    /// Overrides `KILN_TUNE` for this process (`--tune`).
    pub fn set_mode(mode: TuneMode) {
        MODE.store(
            match mode {
                TuneMode::Off => 1,
                TuneMode::Cached => 2,
                TuneMode::Tune => 3,
            },
            Ordering::Relaxed,
        );
    }

    pub fn mode() -> TuneMode {
        match MODE.load(Ordering::Relaxed) {
            1 => TuneMode::Off,
            2 => TuneMode::Cached,
            3 => TuneMode::Tune,
            _ => {
                let m = match std::env::var("KILN_TUNE").as_deref().map(str::trim) {
                    Ok("1") | Ok("on") | Ok("true") => TuneMode::Tune,
                    Ok("0") | Ok("off") | Ok("false") => TuneMode::Off,
                    _ => TuneMode::Cached,
                };
                set_mode(m);
                m
            }
        }
    }

    /// Where the tuned choices for `gpu` are kept (None without a home or
    /// cache directory).
    pub fn tune_file_path(gpu: &Gpu) -> Option<PathBuf> {
        let dir = std::env::var_os("KILN_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kiln")))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("kiln"))
            })?;
        // FNV-1a over the adapter description and the shader: a driver
        // update or an edited kernel starts a new file.
        let mut h: u64 = 0xcbf29ce484222325;
        let shader = crate::shaders::source("matmul").unwrap_or("");
        for b in gpu.describe().bytes().chain(shader.bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        Some(dir.join(format!("matmul-tune-{h:016x}.json")))
    }

    fn with_table<R>(gpu: &Gpu, f: impl FnOnce(&mut Table) -> R) -> R {
        let tables = TABLES.get_or_init(Default::default);
        let mut tables = tables.lock().unwrap_or_else(|e| e.into_inner());
        let table = tables.entry(gpu.describe()).or_insert_with(|| {
            let path = tune_file_path(gpu);
            let file = path
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|bytes| serde_json::from_slice::<TuneFile>(&bytes).ok())
                .filter(|f| f.adapter == gpu.describe())
                .unwrap_or_else(|| TuneFile {
                    adapter: gpu.describe(),
                    choices: BTreeMap::new(),
                });
            Table { path, file }
        });
        f(table)
    }

    /// The tuned choice for `spec`, tuning it first when the mode is
    /// [`TuneMode::Tune`]; None means "use the default variant". A failed
    /// tuning is reported and falls back to the default.
    pub fn choice(gpu: &Gpu, spec: &MatmulSpec) -> Option<MatmulVariant> {
        let mode = mode();
        if mode == TuneMode::Off {
            return None;
        }
        let key = shape_key(spec);
        if let Some(c) = with_table(gpu, |t| t.file.choices.get(&key).cloned()) {
            return Some(c.variant);
        }
        if mode != TuneMode::Tune {
            return None;
        }
        match tune(gpu, spec) {
            Ok(c) => Some(c.variant),
            Err(e) => {
                eprintln!("kiln: tuning matmul {key} failed, using the default variant: {e:#}");
                None
            }
        }
    }

    /// Every tuned choice known for `gpu` (from disk and this process).
    pub fn tuned_choices(gpu: &Gpu) -> BTreeMap<String, TunedChoice> {
        with_table(gpu, |t| t.file.choices.clone())
    }

    /// Times every candidate for `spec`, records the fastest for this
    /// adapter (and on disk, atomically) and returns it.
    pub fn tune(gpu: &Gpu, spec: &MatmulSpec) -> Result<TunedChoice> {
        let key = shape_key(spec);
        let timings = time_candidates(gpu, spec)?;
        let def = crate::kernels::matmul::default_variant(gpu, spec);
        let (variant, ms) = timings
            .iter()
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .context("no candidate variant could run")?;
        let default_ms = timings
            .iter()
            .find(|(v, _)| *v == def)
            .map_or(f64::NAN, |t| t.1);
        let choice = TunedChoice {
            variant,
            ms,
            default_ms,
        };
        eprintln!(
            "kiln: tuned matmul {key}: {} at {ms:.3} ms (default {} {default_ms:.3} ms; {} candidates)",
            variant.name(),
            def.name(),
            timings.len()
        );
        with_table(gpu, |t| -> Result<()> {
            t.file.choices.insert(key, choice.clone());
            if let Some(path) = &t.path {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                crate::io::atomic::write_json_atomic(path, &t.file)?;
            }
            Ok(())
        })?;
        Ok(choice)
    }

    /// Milliseconds per run of each candidate that can run here (after one
    /// untimed run, which compiles it), the best of three timings, each of
    /// enough back-to-back runs in one submission to take about 2 ms.
    pub fn time_candidates(gpu: &Gpu, spec: &MatmulSpec) -> Result<Vec<(MatmulVariant, f64)>> {
        let (na, nb, nc) = spec.needed().context("matmul operand sizes overflow")?;
        let a = gpu.upload_f32(&[na], &vec![0.5; na])?;
        let b = gpu.upload_f32(&[nb], &vec![0.25; nb])?;
        let c = gpu.empty(&[nc], DType::F32)?;
        let mut out = Vec::new();
        for v in candidates(gpu, spec) {
            // A variant beyond this adapter's limits is not a candidate.
            let Ok(d) = matmul_with(gpu, spec, v, &a, &b, None, &c) else {
                continue;
            };
            let run = |reps: usize| -> Result<f64> {
                let ds: Vec<&Dispatch> = std::iter::repeat_n(&d, reps).collect();
                let t = Instant::now();
                gpu.submit(&ds);
                gpu.wait_idle()?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            };
            let first = run(1)?;
            let once = run(1)?.min(first);
            let reps = ((2.0 / once.max(1e-3)) as usize).clamp(1, 64);
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                best = best.min(run(reps)? / reps as f64);
            }
            out.push((v, best));
        }
        gpu.check_errors()?;
        Ok(out)
    }
}
