//! The JavaScript API (wasm32 only): `WebTrainer` and `webgpuAvailable`.
//!
//! ```js
//! import init, { WebTrainer } from "./pkg/kiln_web.js";
//! await init();
//! const t = await WebTrainer.create("tiny", null);   // or pasted text
//! const s = await t.step(5);      // {step, loss, tokensPerSecond, seconds}
//! const text = await t.sample("the ", 200, 0.8);
//! ```
//!
//! Every call that touches the GPU returns a promise and never blocks: step
//! statistics and samples come back through asynchronous buffer mapping.
//! One call at a time: a second call while one is running is rejected with
//! a "busy" error rather than interleaving GPU work.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Object, Reflect};
use kiln::runtime::{Gpu, GpuOptions, LimitsPolicy};
use wasm_bindgen::prelude::*;

use crate::session::{Session, PRESETS};

fn js_error(e: anyhow::Error) -> JsValue {
    js_sys::Error::new(&format!("{e:#}")).into()
}

fn busy() -> JsValue {
    js_sys::Error::new("WebTrainer is busy with another call; await the previous step/sample first")
        .into()
}

fn set(obj: &Object, key: &str, value: JsValue) {
    // Setting a plain property on a fresh object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value);
}

/// Milliseconds from `performance.now()` (window or worker), else `Date.now()`.
pub fn now_ms() -> f64 {
    let global = js_sys::global();
    Reflect::get(&global, &"performance".into())
        .ok()
        .filter(|p| !p.is_undefined())
        .map(web_sys::Performance::unchecked_from_js)
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// Whether this browser exposes WebGPU at all (`navigator.gpu`). An adapter
/// can still be refused; `WebTrainer.create` reports that case.
#[wasm_bindgen(js_name = webgpuAvailable)]
pub fn webgpu_available() -> bool {
    let global = js_sys::global();
    Reflect::get(&global, &"navigator".into())
        .ok()
        .filter(|n| !n.is_undefined())
        .and_then(|n| Reflect::get(&n, &"gpu".into()).ok())
        .is_some_and(|g| !g.is_undefined() && !g.is_null())
}

/// The preset names `WebTrainer.create` accepts.
#[wasm_bindgen]
pub fn presets() -> Vec<String> {
    PRESETS.iter().map(|s| s.to_string()).collect()
}

/// Opens the browser's WebGPU adapter with the adapter's own limits (a
/// browser grants what it reports); Kiln refuses tensors beyond them with
/// its usual message naming the limit.
pub async fn open_gpu(limits: LimitsPolicy) -> anyhow::Result<Gpu> {
    anyhow::ensure!(
        webgpu_available(),
        "this browser has no WebGPU (navigator.gpu is missing); use a recent Chrome, Edge or \
         Firefox Nightly, or Safari Technology Preview, with WebGPU enabled"
    );
    // On wasm32 wgpu's only backend is the browser's WebGPU.
    let opts = GpuOptions {
        limits,
        ..GpuOptions::default()
    };
    Gpu::new(opts).await.map_err(|e| {
        anyhow::anyhow!(
            "WebGPU is present but no adapter could be opened ({e:#}); the browser may have \
             WebGPU disabled or block it for this GPU"
        )
    })
}

/// A GPT trained live on this page's WebGPU adapter.
#[wasm_bindgen]
pub struct WebTrainer {
    inner: Rc<RefCell<Session>>,
}

#[wasm_bindgen]
impl WebTrainer {
    /// Opens WebGPU and builds a model: `preset` is `"tiny"` or `"small"`;
    /// `text` null trains on the built-in Markov corpus, a string on that
    /// text with the byte tokenizer.
    pub async fn create(preset: String, text: Option<String>) -> Result<WebTrainer, JsValue> {
        let gpu = open_gpu(LimitsPolicy::Adapter).await.map_err(js_error)?;
        let session = Session::new(&gpu, &preset, text.as_deref()).map_err(js_error)?;
        Ok(WebTrainer {
            inner: Rc::new(RefCell::new(session)),
        })
    }

    /// Runs `n` optimizer steps (1..=1000) and resolves to the last one's
    /// `{step, loss, gradNorm, lr, tokensPerSecond, seconds}`; tokens per
    /// second count every token of the `n` steps over the call's wall time.
    // The RefCell borrow held across the await is the busy lock: wasm is
    // single-threaded, and a second call meanwhile gets a "busy" error.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn step(&self, n: u32) -> Result<JsValue, JsValue> {
        let inner = self.inner.clone();
        let mut s = inner.try_borrow_mut().map_err(|_| busy())?;
        let t0 = now_ms();
        let stats = s.steps(n).await.map_err(js_error)?;
        let seconds = ((now_ms() - t0) / 1000.0).max(1e-9);
        let tokens = s.tokens_per_step() as f64 * n as f64;
        let out = Object::new();
        set(&out, "step", JsValue::from_f64(stats.step as f64));
        set(&out, "loss", JsValue::from_f64(stats.loss as f64));
        set(&out, "gradNorm", JsValue::from_f64(stats.grad_norm as f64));
        set(&out, "lr", JsValue::from_f64(stats.lr as f64));
        set(&out, "tokensPerSecond", JsValue::from_f64(tokens / seconds));
        set(&out, "seconds", JsValue::from_f64(seconds));
        Ok(out.into())
    }

    /// Continues `prompt` by `n_tokens` bytes (temperature 0 = greedy,
    /// top-k 40) and resolves to the new text only.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn sample(
        &self,
        prompt: String,
        n_tokens: u32,
        temperature: f32,
    ) -> Result<String, JsValue> {
        let inner = self.inner.clone();
        let mut s = inner.try_borrow_mut().map_err(|_| busy())?;
        s.sample(&prompt, n_tokens as usize, temperature)
            .await
            .map_err(js_error)
    }

    /// Back to step 0 with the initial parameters (same seed: the same run).
    pub fn reset(&self) -> Result<(), JsValue> {
        let mut s = self.inner.try_borrow_mut().map_err(|_| busy())?;
        s.reset().map_err(js_error)
    }

    /// The adapter's name as the browser reports it (its `info.description`),
    /// or "unnamed WebGPU adapter" where the browser hides it.
    #[wasm_bindgen(js_name = adapterName)]
    pub fn adapter_name(&self) -> String {
        let s = self.inner.borrow();
        let name = s.gpu().info().name.trim().to_string();
        if name.is_empty() {
            "unnamed WebGPU adapter".to_string()
        } else {
            name
        }
    }

    /// Whether the browser calls this a fallback adapter (software, on the
    /// CPU, such as SwiftShader): expect CPU speeds.
    #[wasm_bindgen(getter, js_name = isCpuAdapter)]
    pub fn is_cpu_adapter(&self) -> bool {
        self.inner.borrow().gpu().is_cpu()
    }

    /// A prompt taken from the text (what `kiln train` samples from).
    #[wasm_bindgen(js_name = defaultPrompt)]
    pub fn default_prompt(&self) -> String {
        self.inner.borrow().default_prompt()
    }

    /// Model and data in one line.
    pub fn describe(&self) -> String {
        self.inner.borrow().describe()
    }

    /// Optimizer steps completed.
    #[wasm_bindgen(getter, js_name = stepCount)]
    pub fn step_count(&self) -> f64 {
        self.inner.borrow().step() as f64
    }

    /// Tokens in one optimizer step (batch × context × accumulation).
    #[wasm_bindgen(getter, js_name = tokensPerStep)]
    pub fn tokens_per_step(&self) -> f64 {
        self.inner.borrow().tokens_per_step() as f64
    }

    /// The built-in corpus's entropy rate in nats/token (the best reachable
    /// loss), or undefined for pasted text.
    #[wasm_bindgen(getter, js_name = lossFloor)]
    pub fn loss_floor(&self) -> Option<f64> {
        self.inner.borrow().loss_floor()
    }

    /// Context length of the model (the longest prompt it sees at once).
    #[wasm_bindgen(getter, js_name = contextLength)]
    pub fn context_length(&self) -> u32 {
        self.inner.borrow().context_length() as u32
    }
}

/// Makes Rust panics show in the browser console with their message instead
/// of a bare "unreachable" trap. The page calls it once after `init()`
/// (tests leave it alone: wasm-bindgen-test installs its own hook).
#[wasm_bindgen(js_name = installPanicHook)]
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&JsValue::from_str(&format!("kiln-web panicked: {info}")));
    }));
}
