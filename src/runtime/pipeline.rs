//! Compute pipelines compiled once and cached, and `Dispatch`: one recorded
//! kernel launch (pipeline + bind group + grid) that can be encoded many times.
//!
//! Binding convention for every Kiln kernel: group 0, bindings numbered in
//! the order of the `Arg` list. Tile and workgroup sizes are WGSL `override`
//! constants, so one shader source serves every variant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};

use super::context::Gpu;
use super::tensor::{DType, Tensor};

/// How a kernel sees one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgKind {
    Uniform,
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
}

/// One binding of a dispatch.
pub enum Arg<'a> {
    /// Small parameter block (`var<uniform>`), copied into its own buffer.
    Uniform(&'a [u8]),
    Read(&'a Tensor),
    ReadWrite(&'a Tensor),
}

impl Arg<'_> {
    fn kind(&self) -> ArgKind {
        match self {
            Arg::Uniform(_) => ArgKind::Uniform,
            Arg::Read(_) => ArgKind::Read,
            Arg::ReadWrite(_) => ArgKind::ReadWrite,
        }
    }
}

/// A kernel entry point, its override constants and its element type.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Shader file name in `shaders/`, without extension.
    pub shader: &'static str,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, f64)>,
    /// The type of the shader's `elem` alias (its floating-point storage):
    /// f32 unless asked otherwise (see [`crate::shaders::with_elem`]).
    pub elem: DType,
}

impl Kernel {
    pub fn new(shader: &'static str, entry: &'static str) -> Self {
        Self {
            shader,
            entry,
            constants: Vec::new(),
            elem: DType::F32,
        }
    }
    pub fn constant(mut self, name: &'static str, value: impl Into<f64>) -> Self {
        self.constants.push((name, value.into()));
        self
    }
    /// The variant whose `elem` storage type is `elem` (f32 or f16).
    pub fn elem(mut self, elem: DType) -> Self {
        self.elem = elem;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    elem: DType,
    constants: Vec<(&'static str, u64)>,
    layout: Vec<ArgKind>,
}

#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<(&'static str, DType), wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<Vec<ArgKind>, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    pub fn len(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn layout_entries(kinds: &[ArgKind]) -> Vec<wgpu::BindGroupLayoutEntry> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, k)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match k {
                ArgKind::Uniform => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                ArgKind::Read | ArgKind::ReadWrite => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *k == ArgKind::Read,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            },
            count: None,
        })
        .collect()
}

/// One recorded kernel launch. Build once, encode every step.
pub struct Dispatch {
    pub label: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    /// Workgroup counts; a zero anywhere makes the dispatch a no-op.
    pub workgroups: [u32; 3],
    uniform: Option<wgpu::Buffer>,
    /// Temporaries (e.g. partial sums) that must live as long as the dispatch.
    scratch: Vec<Tensor>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dispatch({} {:?})", self.label, self.workgroups)
    }
}

impl Dispatch {
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.workgroups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Keeps `t` alive for as long as this dispatch exists.
    pub fn keep(mut self, t: Tensor) -> Self {
        self.scratch.push(t);
        self
    }

    /// Rewrites the parameter block (same size as when built), e.g. the
    /// step counter of an optimizer, without rebuilding the bind group.
    pub fn set_uniform(&self, gpu: &Gpu, bytes: &[u8]) -> Result<()> {
        let buf = self
            .uniform
            .as_ref()
            .ok_or_else(|| anyhow!("dispatch {} has no uniform block", self.label))?;
        let padded = pad16(bytes);
        if padded.len() as u64 != buf.size() {
            bail!(
                "dispatch {}: uniform block of {} bytes replaced by {} bytes",
                self.label,
                buf.size(),
                padded.len()
            );
        }
        gpu.queue().write_buffer(buf, 0, &padded);
        Ok(())
    }
}

fn pad16(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.resize(bytes.len().max(16).div_ceil(16) * 16, 0);
    v
}

/// The one aliasing check for every kernel: WebGPU forbids a dispatch to use
/// one buffer both as writable storage and through another (read-only)
/// binding, and a driver would turn that into a validation panic deep in
/// wgpu. Checked here, by buffer, before anything is created.
fn check_aliasing(kernel: &Kernel, args: &[Arg<'_>]) -> Result<()> {
    for (i, a) in args.iter().enumerate() {
        let Arg::ReadWrite(w) = a else { continue };
        for (j, b) in args.iter().enumerate() {
            if let Arg::Read(r) = b {
                if w.shares_storage(r) {
                    bail!(
                        "kernel {}::{}: binding {i} is written and binding {j} is read, and both are the \
                         same buffer (an in-place call, or two views of one tensor); WebGPU \
                         forbids that: give the output its own tensor",
                        kernel.shader,
                        kernel.entry
                    );
                }
            }
            if j != i {
                if let Arg::ReadWrite(w2) = b {
                    if w.shares_storage(w2) && j > i {
                        // Two writable bindings of one buffer are allowed by
                        // WebGPU; only overlapping bytes would race.
                        let (a0, a1) = (w.offset(), w.offset() + w.bytes());
                        let (b0, b1) = (w2.offset(), w2.offset() + w2.bytes());
                        if a0 < b1 && b0 < a1 {
                            bail!(
                                "kernel {}::{}: bindings {i} and {j} write overlapping bytes of one buffer; \
                                 give each output its own tensor",
                                kernel.shader,
                                kernel.entry
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Splits `groups` one-dimensional workgroups into an (x, y) grid that stays
/// under `max_per_dim`. Shaders recover the linear index as
/// `wg.x + wg.y * num_workgroups.x` and must bounds-check it.
pub fn grid_1d(groups: u32, max_per_dim: u32) -> [u32; 3] {
    if groups <= max_per_dim {
        [groups, 1, 1]
    } else {
        let y = groups.div_ceil(max_per_dim);
        [groups.div_ceil(y), y, 1]
    }
}

impl Gpu {
    fn module(&self, shader: &'static str, elem: DType) -> Result<wgpu::ShaderModule> {
        let mut mods = self.inner.pipelines.modules.lock().expect("cache poisoned");
        if let Some(m) = mods.get(&(shader, elem)) {
            return Ok(m.clone());
        }
        if elem == DType::F16 && !self.features().contains(wgpu::Features::SHADER_F16) {
            bail!(
                "kernel {shader} in f16 needs the shader-f16 feature, which {} lacks; use f32",
                self.info().name
            );
        }
        let src = crate::shaders::source(shader)
            .ok_or_else(|| anyhow!("no shader named {shader:?} in shaders/"))?;
        let src = crate::shaders::with_elem(shader, src, elem)?;
        let m = self
            .device()
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader),
                source: wgpu::ShaderSource::Wgsl(src),
            });
        mods.insert((shader, elem), m.clone());
        Ok(m)
    }

    fn layout(&self, kinds: &[ArgKind]) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let mut layouts = self.inner.pipelines.layouts.lock().expect("cache poisoned");
        layouts
            .entry(kinds.to_vec())
            .or_insert_with(|| {
                let bgl =
                    self.device()
                        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                            label: None,
                            entries: &layout_entries(kinds),
                        });
                let pl = self
                    .device()
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: None,
                        bind_group_layouts: &[Some(&bgl)],
                        immediate_size: 0,
                    });
                (bgl, pl)
            })
            .clone()
    }

    /// The compiled pipeline for `kernel` with this binding layout (cached).
    pub fn pipeline(
        &self,
        kernel: &Kernel,
        kinds: &[ArgKind],
    ) -> Result<(Arc<wgpu::ComputePipeline>, wgpu::BindGroupLayout)> {
        let key = PipelineKey {
            shader: kernel.shader,
            entry: kernel.entry,
            elem: kernel.elem,
            constants: kernel
                .constants
                .iter()
                .map(|(n, v)| (*n, v.to_bits()))
                .collect(),
            layout: kinds.to_vec(),
        };
        let (bgl, pl) = self.layout(kinds);
        if let Some(p) = self
            .inner
            .pipelines
            .pipelines
            .lock()
            .expect("cache poisoned")
            .get(&key)
        {
            return Ok((p.clone(), bgl));
        }
        let module = self.module(kernel.shader, kernel.elem)?;
        let constants: Vec<(&str, f64)> = kernel.constants.to_vec();
        let p = self
            .device()
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: true,
                },
                cache: None,
            });
        let p = Arc::new(p);
        self.inner
            .pipelines
            .pipelines
            .lock()
            .expect("cache poisoned")
            .insert(key, p.clone());
        Ok((p, bgl))
    }

    /// Records one launch of `kernel` over `workgroups` with `args` bound in
    /// order. Checks the grid and every binding against the device limits.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        args: &[Arg<'_>],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let lim = self.limits();
        for (axis, &n) in workgroups.iter().enumerate() {
            if n > lim.max_compute_workgroups_per_dimension {
                bail!(
                    "kernel {}::{} needs {n} workgroups along axis {axis}, more than this adapter's \
                     max_compute_workgroups_per_dimension ({}); the problem is too large for one \
                     dispatch on {} (use a smaller batch)",
                    kernel.shader,
                    kernel.entry,
                    lim.max_compute_workgroups_per_dimension,
                    self.info().name
                );
            }
        }
        let storage_count = args
            .iter()
            .filter(|a| !matches!(a, Arg::Uniform(_)))
            .count() as u32;
        if storage_count > lim.max_storage_buffers_per_shader_stage {
            bail!(
                "kernel {}::{} binds {storage_count} storage buffers, more than \
                 max_storage_buffers_per_shader_stage ({})",
                kernel.shader,
                kernel.entry,
                lim.max_storage_buffers_per_shader_stage
            );
        }
        check_aliasing(kernel, args)?;
        let kinds: Vec<ArgKind> = args.iter().map(Arg::kind).collect();
        let (pipeline, bgl) = self.pipeline(kernel, &kinds)?;
        let mut uniform = None;
        for a in args {
            match a {
                Arg::Uniform(bytes) => {
                    if uniform.is_some() {
                        bail!("kernel {}: at most one uniform block", kernel.entry);
                    }
                    let padded = pad16(bytes);
                    let buf = self.device().create_buffer(&wgpu::BufferDescriptor {
                        label: Some(kernel.entry),
                        size: padded.len() as u64,
                        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: true,
                    });
                    buf.get_mapped_range_mut(..)
                        .map_err(|e| anyhow!("mapping a uniform buffer: {e}"))?
                        .copy_from_slice(&padded);
                    buf.unmap();
                    uniform = Some(buf);
                }
                Arg::Read(t) | Arg::ReadWrite(t) => {
                    if t.bytes() > lim.max_storage_buffer_binding_size {
                        bail!(
                            "kernel {}::{}: a binding of {} bytes exceeds \
                             max_storage_buffer_binding_size ({})",
                            kernel.shader,
                            kernel.entry,
                            t.bytes(),
                            lim.max_storage_buffer_binding_size
                        );
                    }
                }
            }
        }
        let entries: Vec<wgpu::BindGroupEntry> = args
            .iter()
            .enumerate()
            .map(|(i, a)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: match a {
                    Arg::Uniform(_) => uniform
                        .as_ref()
                        .expect("uniform created above")
                        .as_entire_binding(),
                    Arg::Read(t) | Arg::ReadWrite(t) => t.binding(),
                },
            })
            .collect();
        let bind_group = self.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &bgl,
            entries: &entries,
        });
        Ok(Dispatch {
            label: format!("{}::{}", kernel.shader, kernel.entry),
            pipeline,
            bind_group,
            workgroups,
            uniform,
            scratch: Vec::new(),
        })
    }

    /// Encodes the dispatches in order into one compute pass and submits
    /// them as one command buffer. Nothing is waited for.
    pub fn submit(&self, dispatches: &[&Dispatch]) -> wgpu::SubmissionIndex {
        let mut enc = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("kiln"),
                timestamp_writes: None,
            });
            for d in dispatches {
                d.encode(&mut pass);
            }
        }
        self.queue().submit([enc.finish()])
    }

    /// Builds and submits a single dispatch (convenience for one-off calls).
    pub fn launch(&self, kernel: &Kernel, args: &[Arg<'_>], workgroups: [u32; 3]) -> Result<()> {
        let d = self.dispatch(kernel, args, workgroups)?;
        self.submit(&[&d]);
        Ok(())
    }
}
