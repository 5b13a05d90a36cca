//! Tensors: a GPU buffer (or a 256-byte-aligned slice of one), a shape and a dtype.

use std::sync::Arc;

use anyhow::{bail, ensure, Result};

use super::context::Gpu;
use super::pool::{round_up, BufferPool, ALIGN};

/// Element types. Kernels compute in f32; f16 is a storage format (kernels
/// written over `elem` have f16 variants, see `crate::shaders::with_elem`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    I32,
    U32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            _ => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I32 => "i32",
            DType::U32 => "u32",
        }
    }
}

/// A GPU allocation that returns to the pool when the last tensor using it drops.
pub struct Storage {
    buffer: Option<wgpu::Buffer>,
    size: u64,
    pool: Arc<BufferPool>,
}

impl Storage {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("storage used after release")
    }
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.release(b, self.size);
        }
    }
}

#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({}{:?})", self.dtype.name(), self.shape)
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    /// Bytes of the elements (not of the underlying allocation).
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.storage.buffer()
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }
    /// True when both tensors live in the same allocation.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        ensure!(
            numel(shape) == self.numel(),
            "cannot reshape {:?} ({} elements) to {:?} ({} elements)",
            self.shape,
            self.numel(),
            shape,
            numel(shape)
        );
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// The same bytes seen as a flat tensor of another element type (the
    /// planner's slots are untyped memory).
    pub fn retyped(&self, dtype: DType) -> Result<Tensor> {
        let bytes = self.bytes() as usize;
        ensure!(
            bytes.is_multiple_of(dtype.size()),
            "cannot see {bytes} bytes as {} elements",
            dtype.name()
        );
        Ok(Tensor {
            storage: self.storage.clone(),
            offset: self.offset,
            shape: vec![bytes / dtype.size()],
            dtype,
        })
    }

    /// A view of `shape` starting `elem_offset` elements in. The byte offset
    /// must be a multiple of 256 (WebGPU's storage-binding alignment).
    pub fn view(&self, elem_offset: usize, shape: &[usize]) -> Result<Tensor> {
        let off = self.offset + (elem_offset * self.dtype.size()) as u64;
        ensure!(
            off.is_multiple_of(ALIGN),
            "a tensor view must start on a {ALIGN}-byte boundary (offset {off} bytes)"
        );
        ensure!(
            elem_offset + numel(shape) <= self.numel(),
            "view of {:?} at element {elem_offset} runs past a tensor of {} elements",
            shape,
            self.numel()
        );
        Ok(Tensor {
            storage: self.storage.clone(),
            offset: off,
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// The binding for a bind group: exactly this tensor's bytes (at least 4).
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        let size = self.bytes().max(4).div_ceil(4) * 4;
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer(),
            offset: self.offset,
            size: std::num::NonZeroU64::new(size),
        })
    }

    pub async fn read_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        gpu.read_bytes(self.buffer(), self.offset, self.bytes())
            .await
    }
    pub async fn read_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        ensure!(
            self.dtype == DType::F32,
            "read_f32 on a {} tensor",
            self.dtype.name()
        );
        Ok(bytemuck::cast_slice(&self.read_bytes(gpu).await?).to_vec())
    }
    pub async fn read_i32(&self, gpu: &Gpu) -> Result<Vec<i32>> {
        ensure!(
            self.dtype == DType::I32,
            "read_i32 on a {} tensor",
            self.dtype.name()
        );
        Ok(bytemuck::cast_slice(&self.read_bytes(gpu).await?).to_vec())
    }
    pub async fn read_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        ensure!(
            self.dtype == DType::U32,
            "read_u32 on a {} tensor",
            self.dtype.name()
        );
        Ok(bytemuck::cast_slice(&self.read_bytes(gpu).await?).to_vec())
    }
    /// Reads a one-element f32 tensor (a loss, a norm).
    pub async fn read_scalar(&self, gpu: &Gpu) -> Result<f32> {
        ensure!(
            self.numel() == 1,
            "read_scalar on a tensor of shape {:?}",
            self.shape
        );
        Ok(self.read_f32(gpu).await?[0])
    }

    /// Overwrites the tensor's contents from the host.
    pub fn write_bytes(&self, gpu: &Gpu, data: &[u8]) -> Result<()> {
        ensure!(
            data.len() as u64 == self.bytes(),
            "writing {} bytes into a tensor of {} bytes ({:?} {})",
            data.len(),
            self.bytes(),
            self.shape,
            self.dtype.name()
        );
        if data.len().is_multiple_of(4) {
            gpu.queue().write_buffer(self.buffer(), self.offset, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().div_ceil(4) * 4, 0);
            gpu.queue()
                .write_buffer(self.buffer(), self.offset, &padded);
        }
        Ok(())
    }
    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        ensure!(
            self.dtype == DType::F32,
            "write_f32 into a {} tensor",
            self.dtype.name()
        );
        self.write_bytes(gpu, bytemuck::cast_slice(data))
    }
    /// Writes f32 values into an f16 tensor (rounded to nearest).
    pub fn write_f16_from_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        ensure!(
            self.dtype == DType::F16,
            "write_f16_from_f32 into a {} tensor",
            self.dtype.name()
        );
        let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
        self.write_bytes(gpu, bytemuck::cast_slice(&h))
    }
    /// Reads an f16 tensor as f32 values (exactly).
    pub async fn read_f16_as_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        ensure!(
            self.dtype == DType::F16,
            "read_f16_as_f32 on a {} tensor",
            self.dtype.name()
        );
        let bytes = self.read_bytes(gpu).await?;
        Ok(bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect())
    }
    pub fn write_i32(&self, gpu: &Gpu, data: &[i32]) -> Result<()> {
        ensure!(
            self.dtype == DType::I32,
            "write_i32 into a {} tensor",
            self.dtype.name()
        );
        self.write_bytes(gpu, bytemuck::cast_slice(data))
    }
}

impl Gpu {
    /// Checks that a tensor of `bytes` fits this device, naming the limit if not.
    pub fn check_tensor_size(&self, shape: &[usize], dtype: DType) -> Result<u64> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size()));
        let Some(bytes) = n else {
            bail!("tensor shape {shape:?} overflows the address space");
        };
        let bytes = bytes as u64;
        let lim = self.limits();
        if round_up(bytes) > lim.max_buffer_size {
            bail!(
                "a {} tensor of shape {shape:?} needs {bytes} bytes, more than this adapter's \
                 max_buffer_size ({} bytes on {}). Use a smaller batch or model, or pick a \
                 larger adapter with KILN_ADAPTER (see `kiln devices`).",
                dtype.name(),
                lim.max_buffer_size,
                self.info().name
            );
        }
        if bytes > lim.max_storage_buffer_binding_size {
            bail!(
                "a {} tensor of shape {shape:?} needs {bytes} bytes, more than this adapter's \
                 max_storage_buffer_binding_size ({} bytes on {}), so no kernel could bind it. \
                 Use a smaller batch or model, or an adapter with larger limits \
                 (KILN_ADAPTER, KILN_LIMITS=adapter).",
                dtype.name(),
                lim.max_storage_buffer_binding_size,
                self.info().name
            );
        }
        Ok(bytes)
    }

    /// An uninitialised tensor (its contents are stale pool data).
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = self.check_tensor_size(shape, dtype)?;
        let (buffer, size) = self.pool().acquire(bytes);
        Ok(Tensor {
            storage: Arc::new(Storage {
                buffer: Some(buffer),
                size,
                pool: self.pool().clone(),
            }),
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A tensor of zeros (cleared on the GPU timeline).
    pub fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = self.empty(shape, dtype)?;
        let mut enc = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln zeros"),
            });
        enc.clear_buffer(t.buffer(), 0, None);
        self.queue().submit([enc.finish()]);
        Ok(t)
    }

    pub fn upload_f32(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        ensure!(
            numel(shape) == data.len(),
            "uploading {} values into shape {shape:?} ({} elements)",
            data.len(),
            numel(shape)
        );
        let t = self.empty(shape, DType::F32)?;
        t.write_f32(self, data)?;
        Ok(t)
    }
    /// An f16 tensor holding `data` rounded to f16.
    pub fn upload_f16(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        ensure!(
            numel(shape) == data.len(),
            "uploading {} values into shape {shape:?} ({} elements)",
            data.len(),
            numel(shape)
        );
        let t = self.empty(shape, DType::F16)?;
        t.write_f16_from_f32(self, data)?;
        Ok(t)
    }
    pub fn upload_i32(&self, shape: &[usize], data: &[i32]) -> Result<Tensor> {
        ensure!(
            numel(shape) == data.len(),
            "uploading {} values into shape {shape:?} ({} elements)",
            data.len(),
            numel(shape)
        );
        let t = self.empty(shape, DType::I32)?;
        t.write_i32(self, data)?;
        Ok(t)
    }
    pub fn pool_stats(&self) -> super::pool::PoolStats {
        self.pool().stats()
    }
}
