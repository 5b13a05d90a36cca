//! Times recorded dispatches: GPU timestamps around the compute pass when the
//! adapter has `TIMESTAMP_QUERY`, otherwise wall-clock time around one submit
//! and a wait for the device to go idle (which includes submission overhead).

use std::time::Instant;

use anyhow::{anyhow, Result};

use crate::runtime::{Dispatch, Gpu};

/// Which clock measured a [`Timing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// GPU timestamps written at the start and end of the compute pass.
    Timestamp,
    /// Host clock around submit + wait.
    Wall,
}

impl Timer {
    pub fn name(self) -> &'static str {
        match self {
            Timer::Timestamp => "timestamp",
            Timer::Wall => "wall",
        }
    }
}

/// Run times of one sequence of dispatches, in milliseconds.
#[derive(Clone, Debug)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    /// Every timed run, in order.
    pub samples_ms: Vec<f64>,
    pub timer: Timer,
}

/// Runs `dispatches` (in order, one compute pass per run) `warmup` times
/// untimed, then `iters` times timed, with the best timer the adapter offers.
pub fn time_dispatches(
    gpu: &Gpu,
    dispatches: &[&Dispatch],
    warmup: usize,
    iters: usize,
) -> Result<Timing> {
    let timer = if gpu.has_timestamps() {
        Timer::Timestamp
    } else {
        Timer::Wall
    };
    time_dispatches_with(gpu, dispatches, warmup, iters, timer)
}

/// Like [`time_dispatches`] with the timer chosen by the caller.
pub fn time_dispatches_with(
    gpu: &Gpu,
    dispatches: &[&Dispatch],
    warmup: usize,
    iters: usize,
    timer: Timer,
) -> Result<Timing> {
    if timer == Timer::Timestamp && !gpu.has_timestamps() {
        return Err(anyhow!(
            "timestamp timing asked for, but {} lacks TIMESTAMP_QUERY",
            gpu.info().name
        ));
    }
    let iters = iters.max(1);
    for _ in 0..warmup {
        gpu.submit(dispatches);
    }
    gpu.wait_idle()?;
    gpu.check_errors()?;
    let mut samples = Vec::with_capacity(iters);
    let queries = (timer == Timer::Timestamp).then(|| Queries::new(gpu));
    for _ in 0..iters {
        let ms = match &queries {
            Some(q) => q.time(gpu, dispatches)?,
            None => {
                let start = Instant::now();
                gpu.submit(dispatches);
                gpu.wait_idle()?;
                start.elapsed().as_secs_f64() * 1e3
            }
        };
        samples.push(ms);
    }
    gpu.check_errors()?;
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median_ms = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        0.5 * (sorted[mid - 1] + sorted[mid])
    };
    Ok(Timing {
        median_ms,
        min_ms: sorted[0],
        samples_ms: samples,
        timer,
    })
}

/// A two-entry timestamp query set and the buffer it resolves into.
struct Queries {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
}

impl Queries {
    fn new(gpu: &Gpu) -> Self {
        let set = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kiln timing"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln timing resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Self { set, resolve }
    }

    /// One run with timestamps at the start and end of its compute pass.
    fn time(&self, gpu: &Gpu, dispatches: &[&Dispatch]) -> Result<f64> {
        let mut enc = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln timing"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("kiln timing"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &self.set,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            for d in dispatches {
                d.encode(&mut pass);
            }
        }
        enc.resolve_query_set(&self.set, 0..2, &self.resolve, 0);
        gpu.queue().submit([enc.finish()]);
        let bytes = pollster::block_on(gpu.read_bytes(&self.resolve, 0, 16))?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let period_ns = gpu.queue().get_timestamp_period() as f64;
        Ok(ticks[1].wrapping_sub(ticks[0]) as f64 * period_ns / 1e6)
    }
}
