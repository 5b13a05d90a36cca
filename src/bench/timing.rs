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
    Ok(Timing::from_samples(samples, timer))
}

impl Timing {
    /// Median and minimum of `samples` (at least one).
    pub fn from_samples(samples: Vec<f64>, timer: Timer) -> Self {
        let (median_ms, min_ms) = median_min(&samples);
        Timing {
            median_ms,
            min_ms,
            samples_ms: samples,
            timer,
        }
    }
}

/// Median (mean of the middle two for an even count) and minimum; NaN for
/// an empty slice.
pub fn median_min(samples: &[f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        0.5 * (sorted[mid - 1] + sorted[mid])
    };
    (median, sorted[0])
}

/// How [`measure`] repeats a measurement.
#[derive(Clone, Copy, Debug)]
pub struct MeasureOptions {
    /// Untimed runs first (lavapipe compiles a pipeline on its first use).
    pub warmup: usize,
    /// At most this many timed runs…
    pub iters: usize,
    /// …and fewer when one run is so slow that `iters` would take longer
    /// than this many seconds (at least one timed run is always made).
    pub budget_s: f64,
    pub timer: Timer,
}

/// A [`Timing`] plus the process CPU time per timed run (Linux only).
#[derive(Clone, Debug)]
pub struct Measured {
    pub timing: Timing,
    /// Process CPU milliseconds per timed run (user + system, all threads).
    /// On a CPU adapter such as lavapipe the kernels run on this process's
    /// threads, so this measures the work independently of other load.
    pub cpu_ms: Option<f64>,
}

/// Times `dispatches` within a time budget: the warm-up runs plus one probe
/// run size the repeat count, so slow shapes take few runs and fast ones
/// many. With one timed run only, that run is the probe.
pub fn measure(gpu: &Gpu, dispatches: &[&Dispatch], o: &MeasureOptions) -> Result<Measured> {
    let cpu0 = process_cpu_s();
    let probe = time_dispatches_with(gpu, dispatches, o.warmup, 1, o.timer)?;
    let cpu1 = process_cpu_s();
    let per_run_s = probe.median_ms.max(1e-3) / 1e3;
    let iters = ((o.budget_s / per_run_s) as usize).clamp(1, o.iters.max(1));
    if iters == 1 {
        // Only the probe: its CPU time includes the warm-up runs.
        let runs = (o.warmup + 1) as f64;
        let cpu_ms = cpu0.zip(cpu1).map(|(a, b)| (b - a) * 1e3 / runs);
        return Ok(Measured {
            timing: probe,
            cpu_ms,
        });
    }
    let timing = time_dispatches_with(gpu, dispatches, 0, iters, o.timer)?;
    let cpu2 = process_cpu_s();
    let cpu_ms = cpu1.zip(cpu2).map(|(a, b)| (b - a) * 1e3 / iters as f64);
    Ok(Measured { timing, cpu_ms })
}

/// CPU seconds this process has used (user + system, all threads), on
/// Linux; `None` elsewhere.
pub fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of those, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// GPU timestamps around arbitrary work recorded into one command encoder
/// (e.g. a whole training step made of several passes and copies): an empty
/// compute pass that writes the start time, and one that writes the end
/// time once everything before it has finished.
pub struct Bracket {
    q: Queries,
}

impl Bracket {
    /// Fails when the adapter lacks `TIMESTAMP_QUERY`.
    pub fn new(gpu: &Gpu) -> Result<Self> {
        if !gpu.has_timestamps() {
            return Err(anyhow!(
                "GPU timestamps asked for, but {} lacks TIMESTAMP_QUERY",
                gpu.info().name
            ));
        }
        Ok(Self {
            q: Queries::new(gpu),
        })
    }

    /// Records the start time; call before the work's first command.
    pub fn begin(&self, enc: &mut wgpu::CommandEncoder) {
        enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("kiln bracket begin"),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.q.set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: None,
            }),
        });
    }

    /// Records the end time and resolves both; call after the last command.
    pub fn end(&self, enc: &mut wgpu::CommandEncoder) {
        enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("kiln bracket end"),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.q.set,
                beginning_of_pass_write_index: None,
                end_of_pass_write_index: Some(1),
            }),
        });
        enc.resolve_query_set(&self.q.set, 0..2, &self.q.resolve, 0);
    }

    /// Milliseconds between the two timestamps of the last submitted
    /// bracket (waits for it).
    pub fn read_ms(&self, gpu: &Gpu) -> Result<f64> {
        self.q.read_ms(gpu)
    }
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
        self.read_ms(gpu)
    }

    /// The resolved interval in milliseconds.
    fn read_ms(&self, gpu: &Gpu) -> Result<f64> {
        let bytes = pollster::block_on(gpu.read_bytes(&self.resolve, 0, 16))?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let period_ns = gpu.queue().get_timestamp_period() as f64;
        Ok(ticks[1].wrapping_sub(ticks[0]) as f64 * period_ns / 1e6)
    }
}
