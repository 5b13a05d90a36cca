//! Dropout (`shaders/dropout.wgsl`) from a counter-based generator,
//! Philox4x32-10: the mask is a pure function of the 4-word `rng` tensor
//! (seed lo, seed hi, micro-batch counter lo, hi), a stream id and the
//! element index, so the same inputs give the same mask on every run and
//! device, and the backward recomputes it (apply the same call to dy).

use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_dtype, check_float, check_same_shape, check_shape, check_u32};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    threshold: u32,
    scale: f32,
    stream: u32,
}

/// Dropout with probability `p` as the kernel applies it: an element is
/// dropped when its random word is below `threshold` (so it is kept with
/// probability 1 − threshold/2³²), and kept ones are multiplied by `scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutSpec {
    pub threshold: u32,
    pub scale: f32,
}

impl DropoutSpec {
    /// For a drop probability `p` in [0, 1): threshold = round(p·2³²),
    /// scale = 1/(1 − p) (in f32, as PyTorch).
    pub fn new(p: f32) -> Result<Self> {
        ensure!(
            p.is_finite() && (0.0..1.0).contains(&p),
            "dropout: the probability must be in [0, 1), got {p}"
        );
        let t = (p as f64 * 4_294_967_296.0).round().min(u32::MAX as f64);
        Ok(Self {
            threshold: t as u32,
            scale: 1.0 / (1.0 - p),
        })
    }
}

/// y = x·mask·scale. `rng` is u32 [4]; `stream` separates the dropout
/// layers of one graph. The same call on dy gives the backward.
pub fn apply(
    gpu: &Gpu,
    x: &Tensor,
    rng: &Tensor,
    y: &Tensor,
    spec: DropoutSpec,
    stream: u32,
) -> Result<Dispatch> {
    const OP: &str = "dropout";
    let elem = check_float(OP, &[x, y])?;
    check_same_shape(OP, &[x, y])?;
    check_dtype(OP, &[rng], DType::U32)
        .map_err(|e| e.context(format!("{OP}: the rng tensor must be u32 [4]")))?;
    check_shape(OP, "rng", rng, &[4])?;
    let n = check_u32(OP, "element count", x.numel())?;
    let p = Params {
        n,
        threshold: spec.threshold,
        scale: spec.scale,
        stream,
    };
    gpu.dispatch(
        &Kernel::new("dropout", "apply")
            .constant("WG", WG)
            .elem(elem),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(rng),
            Arg::Read(x),
            Arg::ReadWrite(y),
        ],
        grid_1d(
            n.div_ceil(4).div_ceil(WG),
            gpu.limits().max_compute_workgroups_per_dimension,
        ),
    )
}
