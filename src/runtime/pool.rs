//! A buffer pool: storage buffers are reused by size instead of being created
//! and destroyed for every temporary tensor.

use std::collections::HashMap;
use std::sync::Mutex;

/// Every pooled buffer can be bound as storage and copied in and out.
pub const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Allocation granularity; also WebGPU's storage-binding offset alignment.
pub const ALIGN: u64 = 256;

pub fn round_up(bytes: u64) -> u64 {
    bytes.max(1).div_ceil(ALIGN) * ALIGN
}

#[derive(Default)]
struct PoolState {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    live_bytes: u64,
    peak_bytes: u64,
    free_bytes: u64,
    created: u64,
    reused: u64,
}

pub struct BufferPool {
    device: wgpu::Device,
    state: Mutex<PoolState>,
}

/// Counters for reports and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolStats {
    /// Bytes held by live tensors.
    pub live_bytes: u64,
    /// High-water mark of `live_bytes`.
    pub peak_bytes: u64,
    /// Bytes kept in the free lists for reuse.
    pub free_bytes: u64,
    pub buffers_created: u64,
    pub buffers_reused: u64,
}

impl BufferPool {
    pub fn new(device: wgpu::Device) -> Self {
        Self {
            device,
            state: Mutex::default(),
        }
    }

    /// A buffer of at least `bytes` (rounded to [`ALIGN`]); contents are
    /// whatever the last user left, so kernels must write all of an output.
    pub fn acquire(&self, bytes: u64) -> (wgpu::Buffer, u64) {
        let size = round_up(bytes);
        let mut st = self.state.lock().expect("pool poisoned");
        st.live_bytes += size;
        st.peak_bytes = st.peak_bytes.max(st.live_bytes);
        if let Some(buf) = st.free.get_mut(&size).and_then(|v| v.pop()) {
            st.free_bytes -= size;
            st.reused += 1;
            return (buf, size);
        }
        st.created += 1;
        drop(st);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln tensor"),
            size,
            usage: TENSOR_USAGE,
            mapped_at_creation: false,
        });
        (buf, size)
    }

    pub fn release(&self, buf: wgpu::Buffer, size: u64) {
        let mut st = self.state.lock().expect("pool poisoned");
        st.live_bytes -= size;
        st.free_bytes += size;
        st.free.entry(size).or_default().push(buf);
    }

    /// Destroys every buffer in the free lists.
    pub fn trim(&self) {
        let mut st = self.state.lock().expect("pool poisoned");
        for (_, v) in st.free.drain() {
            for b in v {
                b.destroy();
            }
        }
        st.free_bytes = 0;
    }

    pub fn stats(&self) -> PoolStats {
        let st = self.state.lock().expect("pool poisoned");
        PoolStats {
            live_bytes: st.live_bytes,
            peak_bytes: st.peak_bytes,
            free_bytes: st.free_bytes,
            buffers_created: st.created,
            buffers_reused: st.reused,
        }
    }
}
