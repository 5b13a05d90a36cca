//! Helpers shared by the web crate's tests, on both targets: one device per
//! test binary, uploads, asynchronous readback and comparisons.
//!
//! Natively the device is the adapter `KILN_BACKEND` / `KILN_ADAPTER` pick
//! (lavapipe here); in the browser it is the page's WebGPU adapter. Either
//! way it is opened with WebGPU's DEFAULT limits, like `kernels-tests/`.
#![allow(dead_code)]

use kiln::runtime::{DType, Dispatch, Gpu, LimitsPolicy, Tensor};
pub use kiln::util::Rng;

/// Runs an `async fn(Gpu)` test body as a `#[test]` natively (blocking on
/// it with pollster) and as a `#[wasm_bindgen_test]` in the browser.
#[macro_export]
macro_rules! gpu_test {
    ($name:ident, $body:path) => {
        #[cfg(target_arch = "wasm32")]
        #[wasm_bindgen_test::wasm_bindgen_test]
        async fn $name() {
            let gpu = $crate::common::gpu().await;
            $body(gpu).await;
        }

        #[cfg(not(target_arch = "wasm32"))]
        #[test]
        fn $name() {
            pollster::block_on(async {
                let gpu = $crate::common::gpu().await;
                $body(gpu).await;
            });
        }
    };
}

#[cfg(target_arch = "wasm32")]
pub async fn gpu() -> Gpu {
    use std::cell::RefCell;
    thread_local! {
        static GPU: RefCell<Option<Gpu>> = const { RefCell::new(None) };
    }
    if let Some(g) = GPU.with(|c| c.borrow().clone()) {
        return g;
    }
    let g = kiln_web::bindings::open_gpu(LimitsPolicy::WebGpuDefault)
        .await
        .unwrap_or_else(|e| panic!("browser tests need WebGPU: {e:#}"));
    web_sys::console::log_1(&format!("tests on: {}", g.describe()).into());
    GPU.with(|c| *c.borrow_mut() = Some(g.clone()));
    g
}

#[cfg(not(target_arch = "wasm32"))]
pub async fn gpu() -> Gpu {
    use std::sync::OnceLock;
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let mut opts = kiln::GpuOptions::from_env().expect("bad KILN_* environment");
        opts.limits = LimitsPolicy::WebGpuDefault;
        let g = pollster::block_on(Gpu::new(opts)).unwrap_or_else(|e| {
            panic!(
                "tests need a GPU adapter: {e:#}\nWithout a GPU: apt-get install -y mesa-vulkan-drivers"
            )
        });
        eprintln!("tests on: {}", g.describe());
        g
    })
    .clone()
}

/// Logs a line to the browser console or stderr.
pub fn log(msg: &str) {
    #[cfg(target_arch = "wasm32")]
    web_sys::console::log_1(&msg.into());
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{msg}");
}

pub fn upload(g: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    g.upload_f32(shape, data).expect("upload")
}

pub fn upload_i32(g: &Gpu, shape: &[usize], data: &[i32]) -> Tensor {
    g.upload_i32(shape, data).expect("upload")
}

/// A tensor filled with NaN, so a kernel that skips an element is caught.
pub fn poisoned(g: &Gpu, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    upload(g, shape, &vec![f32::NAN; n])
}

pub fn zeros(g: &Gpu, shape: &[usize]) -> Tensor {
    g.zeros(shape, DType::F32).expect("alloc")
}

pub fn run_all(g: &Gpu, ds: &[Dispatch]) {
    let refs: Vec<&Dispatch> = ds.iter().collect();
    g.submit(&refs);
}

pub async fn read(g: &Gpu, t: &Tensor) -> Vec<f32> {
    t.read_f32(g).await.expect("readback")
}

/// Random values in [-1, 1).
pub fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.vec_uniform(n, -1.0, 1.0)
}

#[allow(unused_imports)] // not every test binary compares arrays
pub use kiln::reference::compare::{assert_close, max_abs_err};
