//! Shared test helpers: one device, readback, comparisons, finite differences.
#![allow(dead_code)]

use std::sync::OnceLock;

use kiln::runtime::{DType, Dispatch, Gpu, GpuOptions, LimitsPolicy, Tensor};
pub use kiln::util::Rng;

/// The shared test device: `KILN_BACKEND` / `KILN_ADAPTER` apply; limits are
/// WebGPU's defaults. Panics with instructions when there is no adapter.
/// Inside [`with_256_row_threads`] it is that function's device instead.
pub fn gpu() -> &'static Gpu {
    if let Some(g) = GPU_OVERRIDE.with(|o| o.get()) {
        return g;
    }
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| open_test_gpu(None))
}

thread_local! {
    // Each test runs on its own thread, so an override never leaks.
    static GPU_OVERRIDE: std::cell::Cell<Option<&'static Gpu>> = const { std::cell::Cell::new(None) };
}

fn open_test_gpu(row_threads: Option<u32>) -> Gpu {
    let mut opts = GpuOptions::from_env().expect("bad KILN_* environment");
    opts.limits = LimitsPolicy::WebGpuDefault;
    if row_threads.is_some() {
        opts.row_threads = row_threads;
    }
    match pollster::block_on(Gpu::new(opts)) {
        Ok(g) => {
            eprintln!(
                "kernel tests on: {} (row kernels: ≤ {} threads per row)",
                g.describe(),
                g.row_threads()
            );
            g
        }
        Err(e) => panic!(
            "kernel tests need a GPU adapter and none could be opened: {e:#}\n\
             On a machine without a GPU: apt-get install -y mesa-vulkan-drivers (lavapipe)."
        ),
    }
}

/// Runs `f` with [`gpu`] (and every helper here) on a second device whose
/// row kernels use 256 threads per row, the GPU setting, so that on a CPU
/// adapter (where the default is 8) both code paths are tested.
pub fn with_256_row_threads(f: impl FnOnce()) {
    static WIDE: OnceLock<Gpu> = OnceLock::new();
    let g: &'static Gpu = WIDE.get_or_init(|| open_test_gpu(Some(256)));
    GPU_OVERRIDE.with(|o| o.set(Some(g)));
    f();
    GPU_OVERRIDE.with(|o| o.set(None));
}

pub fn upload(shape: &[usize], data: &[f32]) -> Tensor {
    gpu().upload_f32(shape, data).expect("upload")
}

pub fn upload_i32(shape: &[usize], data: &[i32]) -> Tensor {
    gpu().upload_i32(shape, data).expect("upload")
}

/// A tensor filled with NaN so a kernel that skips an element is caught.
pub fn poisoned(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    upload(shape, &vec![f32::NAN; n])
}

pub fn empty(shape: &[usize]) -> Tensor {
    gpu().empty(shape, DType::F32).expect("alloc")
}

pub fn run(d: &Dispatch) {
    gpu().submit(&[d]);
}

pub fn run_all(ds: &[Dispatch]) {
    let refs: Vec<&Dispatch> = ds.iter().collect();
    gpu().submit(&refs);
}

pub fn read(t: &Tensor) -> Vec<f32> {
    pollster::block_on(t.read_f32(gpu())).expect("readback")
}

pub fn read_i32(t: &Tensor) -> Vec<i32> {
    pollster::block_on(t.read_i32(gpu())).expect("readback")
}

/// Random values in [-1, 1).
pub fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.vec_uniform(n, -1.0, 1.0)
}

pub use kiln::reference::compare::{assert_close, max_abs_err};

/// Asserts two runs produced identical bits.
pub fn assert_same_bits(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(
            x.to_bits(),
            y.to_bits(),
            "{what}: run-to-run difference at {i}: {x} vs {y}"
        );
    }
}

/// Central finite differences of the scalar L(x) = Σ w·f(x) at the given
/// indices of x, where `f` runs the GPU forward kernel. Returns dL/dx[i].
pub fn finite_diff(
    f: &dyn Fn(&[f32]) -> Vec<f32>,
    x: &[f32],
    w: &[f32],
    indices: &[usize],
    eps: f32,
) -> Vec<f64> {
    let loss = |xs: &[f32]| -> f64 {
        f(xs)
            .iter()
            .zip(w)
            .map(|(y, w)| *y as f64 * *w as f64)
            .sum()
    };
    indices
        .iter()
        .map(|&i| {
            let mut xp = x.to_vec();
            xp[i] += eps;
            let mut xm = x.to_vec();
            xm[i] -= eps;
            // Use the perturbation actually representable in f32.
            let h = xp[i] as f64 - xm[i] as f64;
            (loss(&xp) - loss(&xm)) / h
        })
        .collect()
}

/// Checks analytic gradients against finite differences at some indices.
pub fn assert_fd(
    what: &str,
    analytic: &[f32],
    numeric: &[f64],
    indices: &[usize],
    atol: f64,
    rtol: f64,
) {
    for (k, &i) in indices.iter().enumerate() {
        let a = analytic[i] as f64;
        let n = numeric[k];
        let tol = atol + rtol * n.abs();
        assert!(
            (a - n).abs() <= tol,
            "{what}: finite-difference check at {i}: analytic {a:.6e}, numeric {n:.6e} (tol {tol:.2e})"
        );
    }
}

/// A spread of indices into an array of n elements: the ends and some between.
pub fn probe_indices(n: usize, count: usize, rng: &mut Rng) -> Vec<usize> {
    let mut v = vec![0, n - 1];
    while v.len() < count.min(n) {
        v.push(rng.below(n as u64) as usize);
    }
    v.sort_unstable();
    v.dedup();
    v
}
