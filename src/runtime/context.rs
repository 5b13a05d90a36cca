//! Instance, adapter and device: the one place Kiln talks to wgpu's setup API.
//!
//! Adapter choice is explicit: `KILN_BACKEND` (vulkan, metal, dx12, gl,
//! webgpu) narrows the backends, `KILN_ADAPTER` picks one adapter by index (as
//! `kiln devices` numbers them) or by a case-insensitive name substring. With
//! neither set, wgpu's high-performance choice wins.

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context as _, Result};

use super::pipeline::PipelineCache;
use super::pool::BufferPool;

/// Which limits to ask the device for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitsPolicy {
    /// Everything the adapter offers (native training wants large buffers).
    Adapter,
    /// WebGPU's default limits, the floor every browser grants. Tests use
    /// this so a kernel that needs more than a browser gives fails here first.
    WebGpuDefault,
}

/// How to pick and open a device.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Backends to consider; `None` means wgpu's primary backends (Vulkan,
    /// Metal, DX12, WebGPU). GL is only used when asked for by name.
    pub backends: Option<wgpu::Backends>,
    /// Index (as listed by `kiln devices`) or name substring.
    pub adapter: Option<String>,
    pub limits: LimitsPolicy,
    /// Most threads that row kernels (LayerNorm, softmax, cross-entropy)
    /// give one row: a power of two in 1..=256. `None` picks per adapter:
    /// 256 on GPUs; 8 on CPU adapters (lavapipe, SwiftShader), where every
    /// workgroup barrier of a tree reduction is a costly switch between
    /// emulated invocations and a thread looping over its share is cheap
    /// (measured 4–5× faster row kernels on lavapipe, see BENCHMARKS.md).
    pub row_threads: Option<u32>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            backends: None,
            adapter: None,
            limits: LimitsPolicy::Adapter,
            row_threads: None,
        }
    }
}

/// Row-kernel threads per row on CPU adapters (see [`GpuOptions::row_threads`]).
pub const CPU_ROW_THREADS: u32 = 8;

/// Checks a `row_threads` value: a power of two in 1..=256.
pub fn check_row_threads(n: u32) -> Result<u32> {
    if n == 0 || n > 256 || !n.is_power_of_two() {
        bail!("row_threads = {n}: must be a power of two from 1 to 256 (e.g. KILN_ROW_THREADS=8)");
    }
    Ok(n)
}

impl GpuOptions {
    /// Options from `KILN_BACKEND`, `KILN_ADAPTER`, `KILN_LIMITS` (`adapter`
    /// or `webgpu`) and `KILN_ROW_THREADS` (see [`GpuOptions::row_threads`]).
    /// Unknown values are errors, not silent defaults.
    pub fn from_env() -> Result<Self> {
        // The browser has no environment: on wasm32 these are the defaults.
        #[cfg_attr(target_arch = "wasm32", allow(unused_mut))]
        let mut opts = Self::default();
        #[cfg(not(target_arch = "wasm32"))]
        {
            if let Ok(b) = std::env::var("KILN_BACKEND") {
                opts.backends = Some(parse_backends(&b)?);
            }
            if let Ok(a) = std::env::var("KILN_ADAPTER") {
                if !a.trim().is_empty() {
                    opts.adapter = Some(a);
                }
            }
            if let Ok(l) = std::env::var("KILN_LIMITS") {
                opts.limits = match l.trim().to_ascii_lowercase().as_str() {
                    "adapter" | "" => LimitsPolicy::Adapter,
                    "webgpu" | "default" | "webgpu-default" => LimitsPolicy::WebGpuDefault,
                    other => {
                        bail!("KILN_LIMITS={other:?} is not understood; use `adapter` or `webgpu`")
                    }
                };
            }
            if let Ok(r) = std::env::var("KILN_ROW_THREADS") {
                let r = r.trim();
                if !r.is_empty() {
                    let n: u32 = r.parse().map_err(|_| {
                        anyhow::anyhow!(
                            "KILN_ROW_THREADS={r:?} is not a number; use a power of two from 1 to 256"
                        )
                    })?;
                    opts.row_threads = Some(check_row_threads(n)?);
                }
            }
        }
        Ok(opts)
    }
}

/// Parses a comma-separated backend list such as `vulkan` or `metal,dx12`.
pub fn parse_backends(s: &str) -> Result<wgpu::Backends> {
    let mut out = wgpu::Backends::empty();
    for part in s.split(',').map(|p| p.trim().to_ascii_lowercase()) {
        out |= match part.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "webgpu" | "browser" => wgpu::Backends::BROWSER_WEBGPU,
            "" => continue,
            other => bail!(
                "KILN_BACKEND: unknown backend {other:?}; expected one of vulkan, metal, dx12, gl, webgpu"
            ),
        };
    }
    if out.is_empty() {
        bail!("KILN_BACKEND is empty; expected one of vulkan, metal, dx12, gl, webgpu");
    }
    Ok(out)
}

/// Features Kiln uses when present; none is required.
pub fn wanted_features(available: wgpu::Features) -> wgpu::Features {
    let wanted =
        wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
    available & wanted
}

pub(crate) struct GpuInner {
    pub instance: wgpu::Instance,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub pipelines: PipelineCache,
    pub pool: Arc<BufferPool>,
    /// wgpu validation errors not yet reported to the caller.
    pub errors: Arc<Mutex<Vec<String>>>,
    /// Row kernels' threads per row, at most (see [`GpuOptions::row_threads`]).
    pub row_threads: u32,
}

/// A cheap-to-clone handle on one opened device and its caches.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gpu({} on {:?}, {:?})",
            self.inner.info.name, self.inner.info.backend, self.inner.info.device_type
        )
    }
}

/// The backends searched when none is named: the ones with full compute
/// support. GL lacks much of what the kernels use.
pub const DEFAULT_BACKENDS: wgpu::Backends = wgpu::Backends::PRIMARY;

pub(crate) fn new_instance(backends: Option<wgpu::Backends>) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends.unwrap_or(DEFAULT_BACKENDS);
    wgpu::Instance::new(desc)
}

/// Every adapter the instance can see, in a stable order (the index that
/// `KILN_ADAPTER` refers to).
pub async fn list_adapters(backends: Option<wgpu::Backends>) -> Vec<wgpu::Adapter> {
    let instance = new_instance(backends);
    instance
        .enumerate_adapters(backends.unwrap_or(DEFAULT_BACKENDS))
        .await
}

impl Gpu {
    /// Opens a device following `KILN_BACKEND` / `KILN_ADAPTER` / `KILN_LIMITS`.
    pub async fn from_env() -> Result<Self> {
        Self::new(GpuOptions::from_env()?).await
    }

    pub async fn new(opts: GpuOptions) -> Result<Self> {
        let instance = new_instance(opts.backends);
        let adapter = match &opts.adapter {
            Some(sel) => {
                let adapters = instance
                    .enumerate_adapters(opts.backends.unwrap_or(DEFAULT_BACKENDS))
                    .await;
                pick_adapter(adapters, sel)?
            }
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    apply_limit_buckets: false,
                })
                .await
                .map_err(|e| anyhow!("{}", no_adapter_message(&e.to_string())))?,
        };
        Self::from_adapter(instance, adapter, opts.limits, opts.row_threads).await
    }

    pub async fn from_adapter(
        instance: wgpu::Instance,
        adapter: wgpu::Adapter,
        policy: LimitsPolicy,
        row_threads: Option<u32>,
    ) -> Result<Self> {
        let info = adapter.get_info();
        let available = adapter.limits();
        let required_limits = match policy {
            LimitsPolicy::Adapter => available.clone(),
            LimitsPolicy::WebGpuDefault => {
                let d = wgpu::Limits::default();
                if !d.check_limits(&available) {
                    bail!(
                        "adapter {:?} does not reach WebGPU's default limits; run with KILN_LIMITS=adapter",
                        info.name
                    );
                }
                d
            }
        };
        let features = wanted_features(adapter.features());
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("kiln"),
                required_features: features,
                required_limits: required_limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .with_context(|| format!("opening a device on adapter {:?}", info.name))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            // Kiln validates shapes and limits before wgpu sees them; anything
            // that still reaches here is a bug in Kiln. It is recorded and
            // surfaced as an error by the next readback instead of a panic.
            log::error!("wgpu error: {e}");
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let limits = device.limits();
        let features = device.features();
        let pool = Arc::new(BufferPool::new(device.clone()));
        let row_threads = match row_threads {
            Some(n) => check_row_threads(n)?,
            None if info.device_type == wgpu::DeviceType::Cpu => CPU_ROW_THREADS,
            None => 256,
        };
        Ok(Self {
            inner: Arc::new(GpuInner {
                instance,
                adapter,
                device,
                queue,
                info,
                limits,
                features,
                pipelines: PipelineCache::default(),
                pool,
                errors,
                row_threads,
            }),
        })
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    pub fn adapter(&self) -> &wgpu::Adapter {
        &self.inner.adapter
    }
    pub fn instance(&self) -> &wgpu::Instance {
        &self.inner.instance
    }
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }
    pub fn has_timestamps(&self) -> bool {
        self.inner
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }
    pub fn is_cpu(&self) -> bool {
        self.inner.info.device_type == wgpu::DeviceType::Cpu
    }
    /// The most threads row kernels give one row (see [`GpuOptions::row_threads`]).
    pub fn row_threads(&self) -> u32 {
        self.inner.row_threads
    }
    /// One line naming the adapter, for logs and benchmark records.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }
    /// Fails with the first wgpu error recorded since the last check.
    pub fn check_errors(&self) -> Result<()> {
        let mut errs = self.inner.errors.lock().expect("error sink poisoned");
        if errs.is_empty() {
            return Ok(());
        }
        let all = std::mem::take(&mut *errs);
        bail!(
            "the GPU rejected work ({} error(s)); this is a Kiln bug, please report it:\n{}",
            all.len(),
            all.join("\n")
        )
    }

    pub(crate) fn pool(&self) -> &Arc<BufferPool> {
        &self.inner.pool
    }

    /// Waits for all submitted work on native; a no-op on the web, where the
    /// browser drives completion and callers await a mapping instead.
    pub fn wait_idle(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow!("waiting for the GPU failed: {e}"))?;
        Ok(())
    }
}

fn no_adapter_message(detail: &str) -> String {
    format!(
        "no GPU adapter found ({detail}). Kiln needs a Vulkan, Metal, DX12 or WebGPU adapter. \
         On Linux without a GPU, `apt-get install mesa-vulkan-drivers` provides lavapipe \
         (a CPU Vulkan driver); run `kiln devices` to see what wgpu finds."
    )
}

fn pick_adapter(adapters: Vec<wgpu::Adapter>, sel: &str) -> Result<wgpu::Adapter> {
    if adapters.is_empty() {
        bail!("{}", no_adapter_message("enumeration returned none"));
    }
    let names: Vec<String> = adapters
        .iter()
        .enumerate()
        .map(|(i, a)| format!("  [{i}] {} ({:?})", a.get_info().name, a.get_info().backend))
        .collect();
    if let Ok(idx) = sel.trim().parse::<usize>() {
        let n = adapters.len();
        return adapters.into_iter().nth(idx).ok_or_else(|| {
            anyhow!(
                "KILN_ADAPTER={idx} but only {n} adapter(s) exist:\n{}",
                names.join("\n")
            )
        });
    }
    let needle = sel.to_ascii_lowercase();
    adapters
        .into_iter()
        .find(|a| a.get_info().name.to_ascii_lowercase().contains(&needle))
        .ok_or_else(|| {
            anyhow!(
                "KILN_ADAPTER={sel:?} matches no adapter name; available:\n{}",
                names.join("\n")
            )
        })
}
