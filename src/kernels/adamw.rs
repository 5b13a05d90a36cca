//! AdamW and global-norm gradient clipping (`shaders/adamw.wgsl`), matching
//! torch.optim.AdamW (foreach=False, amsgrad=False) and
//! torch.nn.utils.clip_grad_norm_ in formulation and order of operations.
//!
//! The squared gradient norm comes from [`sum_squares`](super::reduce::sum_squares)
//! and stays on the GPU: clipping reads it there, nothing is read back.

use anyhow::{bail, ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::reduce::check_distinct;
use super::{check_f32, check_numel, check_same_shape, check_u32};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;

/// AdamW hyper-parameters. Defaults are PyTorch's.
#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// The same range checks as torch.optim.AdamW's constructor.
    pub fn validate(&self) -> Result<()> {
        let ok = |x: f32| x.is_finite();
        ensure!(
            ok(self.lr) && self.lr >= 0.0,
            "adamw: invalid learning rate {}",
            self.lr
        );
        ensure!(
            ok(self.eps) && self.eps >= 0.0,
            "adamw: invalid eps {}",
            self.eps
        );
        ensure!(
            (0.0..1.0).contains(&self.beta1),
            "adamw: invalid beta1 {} (need 0 ≤ beta1 < 1)",
            self.beta1
        );
        ensure!(
            (0.0..1.0).contains(&self.beta2),
            "adamw: invalid beta2 {} (need 0 ≤ beta2 < 1)",
            self.beta2
        );
        ensure!(
            ok(self.weight_decay) && self.weight_decay >= 0.0,
            "adamw: invalid weight_decay {}",
            self.weight_decay
        );
        Ok(())
    }
}

/// Mirrors `Params` in adamw.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
    max_norm: f32,
}

/// The f64 a user meant by an f32 hyper-parameter: its shortest decimal form
/// read as f64 (0.999f32 → 0.999, not 0.99900001287). PyTorch computes
/// `1 - beta2` etc. from Python floats; widening the f32 bits instead would
/// make 1 − β2 wrong by 1.3e-5 relative.
pub fn decimal_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// Mirrors `ClipParams` in adamw.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ClipParams {
    max_norm: f32,
    _pad: [u32; 3],
}

/// The parameter block of [`adamw_step`] for step `t` (≥ 1; t = 0 would
/// divide by zero, and `adamw_step` rejects it) with `cfg`, clipping to
/// `max_norm` when `Some` (a value ≤ 0 also means no clipping). Write it with
/// `Dispatch::set_uniform` to advance a dispatch built once; its size never
/// changes. Scalars are computed in f64 as PyTorch does in Python, then
/// rounded to f32.
pub fn adamw_uniform(cfg: &AdamWConfig, t: u32, max_norm: Option<f32>) -> Vec<u8> {
    let (lr, wd) = (decimal_f64(cfg.lr), decimal_f64(cfg.weight_decay));
    let (b1, b2) = (decimal_f64(cfg.beta1), decimal_f64(cfg.beta2));
    // Python's `beta ** step` with a float step is C pow.
    let bias_correction1 = 1.0 - b1.powf(t as f64);
    let bias_correction2 = 1.0 - b2.powf(t as f64);
    let p = Params {
        decay: (1.0 - lr * wd) as f32,
        one_minus_beta1: (1.0 - b1) as f32,
        beta2: cfg.beta2,
        one_minus_beta2: (1.0 - b2) as f32,
        step_size: (lr / bias_correction1) as f32,
        bc2_sqrt: bias_correction2.sqrt() as f32,
        eps: cfg.eps,
        max_norm: max_norm.unwrap_or(0.0),
    };
    bytemuck::bytes_of(&p).to_vec()
}

fn grid(gpu: &Gpu, op: &str, n: usize) -> Result<[u32; 3]> {
    let n = check_u32(op, "element count", n)?;
    Ok(grid_1d(
        n.div_ceil(WG),
        gpu.limits().max_compute_workgroups_per_dimension,
    ))
}

/// `allow_zero`: 0 means "no clipping" (AdamW still reads Σg² to skip
/// non-finite steps); clipping on its own needs a positive bound.
fn check_sumsq(op: &str, sumsq: &Tensor, max_norm: f32, allow_zero: bool) -> Result<()> {
    check_f32(op, &[sumsq])?;
    check_numel(op, "sumsq", sumsq, 1)?;
    let ok = max_norm.is_finite() && (max_norm > 0.0 || (allow_zero && max_norm == 0.0));
    if !ok {
        let want = if allow_zero {
            ">= 0 (0 = no clipping)"
        } else {
            "> 0"
        };
        bail!("{op}: max_norm must be finite and {want}, got {max_norm}");
    }
    Ok(())
}

/// One AdamW step (`t` ≥ 1) updating `param`, `m` (first moment) and `v`
/// (second moment) in place from `grad`; all four f32 with the same shape.
/// `grad_sumsq = Some((sumsq, max_norm))` clips on the fly: the gradient is
/// read as g·min(1, max_norm / (sqrt(sumsq[0]) + 1e-6)) and `grad` itself is
/// left unchanged; `sumsq` is the [1] output of `sum_squares` over all
/// gradients; `max_norm` 0 reads Σg² without clipping. A non-finite Σg²
/// makes the update a no-op (parameters and moments unchanged: a skipped
/// step). With `None` a one-element zero is bound instead (kept alive
/// by the dispatch), so the binding layout is the same either way and
/// [`adamw_uniform`] can switch clipping off later.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad_sumsq: Option<(&Tensor, f32)>,
    cfg: &AdamWConfig,
    t: u32,
) -> Result<Dispatch> {
    const OP: &str = "adamw_step";
    ensure!(
        t >= 1,
        "{OP}: step t must be ≥ 1 (PyTorch counts from 1), got 0"
    );
    cfg.validate()?;
    check_f32(OP, &[param, grad, m, v])?;
    check_same_shape(OP, &[param, grad, m, v])?;
    let workgroups = grid(gpu, OP, param.numel())?;
    let dummy;
    let (sumsq, max_norm) = match grad_sumsq {
        Some((s, max_norm)) => {
            check_sumsq(OP, s, max_norm, true)?;
            (s, Some(max_norm))
        }
        None => {
            dummy = gpu.zeros(&[1], DType::F32)?;
            (&dummy, None)
        }
    };
    for (name, w) in [("param", param), ("m", m), ("v", v)] {
        check_distinct(OP, (name, w), &[("grad", grad), ("sumsq", sumsq)])?;
    }
    let params = adamw_uniform(cfg, t, max_norm);
    let d = gpu.dispatch(
        &Kernel::new("adamw", "adamw").constant("WG", WG),
        &[
            Arg::Uniform(&params),
            Arg::ReadWrite(param),
            Arg::Read(grad),
            Arg::ReadWrite(m),
            Arg::ReadWrite(v),
            Arg::Read(sumsq),
        ],
        workgroups,
    )?;
    Ok(match grad_sumsq {
        Some(_) => d,
        None => d.keep(sumsq.clone()),
    })
}

/// In place: grad ·= min(1, max_norm / (sqrt(sumsq[0]) + 1e-6)), as
/// torch.nn.utils.clip_grad_norm_ with `sumsq` = Σ g² over all gradients
/// (from `sum_squares`, read on the GPU; nothing comes back to the CPU).
pub fn clip_by_global_norm(
    gpu: &Gpu,
    grad: &Tensor,
    sumsq: &Tensor,
    max_norm: f32,
) -> Result<Dispatch> {
    const OP: &str = "clip_by_global_norm";
    check_f32(OP, &[grad])?;
    check_sumsq(OP, sumsq, max_norm, false)?;
    check_distinct(OP, ("grad", grad), &[("sumsq", sumsq)])?;
    let params = ClipParams {
        max_norm,
        _pad: [0; 3],
    };
    gpu.dispatch(
        &Kernel::new("adamw", "clip_grad").constant("WG", WG),
        &[
            Arg::Uniform(bytemuck::bytes_of(&params)),
            Arg::ReadWrite(grad),
            Arg::Read(sumsq),
        ],
        grid(gpu, OP, grad.numel())?,
    )
}
