//! The non-finite guard of a training step (`shaders/guard.wgsl`): one
//! thread that looks at the step's losses and Σg² on the GPU and, when any
//! is NaN or infinite, turns every AdamW update of the step into a no-op
//! (by setting Σg² to +inf, see [`adamw_step`](super::adamw::adamw_step)).
//! It counts skipped steps and records the first bad one in a small u32
//! state tensor; nothing is read back unless the caller asks.

use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::reduce::check_distinct;
use super::{check_dtype, check_f32, check_numel};
use crate::runtime::{Arg, DType, Dispatch, Gpu, Kernel, Tensor};

/// Mirrors `Params` in guard.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    step_plus1: u32,
    n_losses: u32,
    sticky: u32,
    _pad: u32,
}

/// Words of the guard's state tensor: steps skipped, first bad step + 1
/// (0: none), whether the last step was skipped, and one spare.
pub const STATE_WORDS: usize = 4;

/// The parameter block for step `step` (from 0): written with
/// `Dispatch::set_uniform` before each step.
pub fn guard_uniform(step: u64, n_losses: usize, sticky: bool) -> Vec<u8> {
    let p = Params {
        step_plus1: u32::try_from(step + 1).unwrap_or(u32::MAX),
        n_losses: n_losses as u32,
        sticky: sticky as u32,
        _pad: 0,
    };
    bytemuck::bytes_of(&p).to_vec()
}

/// The guard over `losses[0..n_losses]` (f32) and `sumsq` (f32 [1], written
/// +inf when the step is skipped), recording into `state` (u32
/// [`STATE_WORDS`]). `sticky`: once a step was bad, skip every later one.
pub fn nonfinite_guard(
    gpu: &Gpu,
    losses: &Tensor,
    n_losses: usize,
    sumsq: &Tensor,
    state: &Tensor,
    sticky: bool,
) -> Result<Dispatch> {
    const OP: &str = "nonfinite_guard";
    check_f32(OP, &[losses, sumsq])?;
    check_dtype(OP, &[state], DType::U32)?;
    check_numel(OP, "sumsq", sumsq, 1)?;
    check_numel(OP, "state", state, STATE_WORDS)?;
    ensure!(
        n_losses <= losses.numel(),
        "{OP}: {n_losses} losses asked for, the tensor holds {}",
        losses.numel()
    );
    check_distinct(OP, ("sumsq", sumsq), &[("losses", losses)])?;
    check_distinct(
        OP,
        ("state", state),
        &[("losses", losses), ("sumsq", sumsq)],
    )?;
    gpu.dispatch(
        &Kernel::new("guard", "guard"),
        &[
            Arg::Uniform(&guard_uniform(0, n_losses, sticky)),
            Arg::Read(losses),
            Arg::ReadWrite(sumsq),
            Arg::ReadWrite(state),
        ],
        [1, 1, 1],
    )
}
