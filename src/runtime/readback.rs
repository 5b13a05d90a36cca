//! Asynchronous readback that works the same natively and in the browser.
//!
//! `map_async` reports through a callback. Natively someone must poll the
//! device for that callback to run, so native code polls (waiting) before it
//! awaits; in the browser the event loop runs it and we only await.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use anyhow::{anyhow, Result};

use super::context::Gpu;
use super::tensor::Tensor;

#[derive(Default)]
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// A minimal one-shot channel: the sender is a `FnOnce`, the receiver a future.
pub(crate) fn oneshot<T: Send + 'static>() -> (impl FnOnce(T) + Send + 'static, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
    }));
    let tx_slot = slot.clone();
    let send = move |v: T| {
        let mut s = tx_slot.lock().expect("oneshot poisoned");
        s.value = Some(v);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    };
    (send, Receiver { slot })
}

pub(crate) struct Receiver<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Future for Receiver<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.slot.lock().expect("oneshot poisoned");
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A copy to the host that was encoded into a caller's command encoder:
/// `encode` before the submit, `start` after it, `get` (await) to collect.
pub struct PendingRead {
    staging: wgpu::Buffer,
    bytes: u64,
    recv: Option<Receiver<Result<(), wgpu::BufferAsyncError>>>,
}

impl PendingRead {
    /// Records a copy of `bytes` bytes at `offset` of `src` into a mappable buffer.
    pub fn encode_range(
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Self {
        let padded = bytes.max(4).div_ceil(4) * 4;
        let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.copy_buffer_to_buffer(src, offset, &staging, 0, padded);
        Self {
            staging,
            bytes,
            recv: None,
        }
    }

    pub fn encode(gpu: &Gpu, enc: &mut wgpu::CommandEncoder, t: &Tensor) -> Self {
        Self::encode_range(gpu, enc, t.buffer(), t.offset(), t.bytes())
    }

    /// Requests the mapping; call after the encoder was submitted.
    pub fn start(&mut self) {
        if self.recv.is_none() {
            let (send, recv) = oneshot();
            self.staging.map_async(wgpu::MapMode::Read, .., send);
            self.recv = Some(recv);
        }
    }

    /// The bytes, once the GPU has finished the work before the copy.
    pub async fn get(mut self, gpu: &Gpu) -> Result<Vec<u8>> {
        self.start();
        #[cfg(not(target_arch = "wasm32"))]
        gpu.wait_idle()?;
        let recv = self.recv.take().expect("started above");
        recv.await
            .map_err(|e| anyhow!("reading a tensor back from the GPU failed: {e}"))?;
        gpu.check_errors()?;
        let data = {
            let view = self
                .staging
                .get_mapped_range(..)
                .map_err(|e| anyhow!("mapping the readback buffer failed: {e}"))?;
            view[..self.bytes as usize].to_vec()
        };
        self.staging.unmap();
        self.staging.destroy();
        Ok(data)
    }
}

impl Gpu {
    /// Copies `bytes` bytes at `offset` of `src` to the host.
    pub async fn read_bytes(&self, src: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let mut enc = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln readback"),
            });
        let mut p = PendingRead::encode_range(self, &mut enc, src, offset, bytes);
        self.queue().submit([enc.finish()]);
        p.start();
        p.get(self).await
    }
}
