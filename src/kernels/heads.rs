//! Attention head layout changes (`shaders/heads.wgsl`): token-major
//! [B, T, S] ↔ head-major [B, H, T, D], for the unfused attention path.

use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_f32, check_numel, check_u32};
use crate::runtime::{grid_1d, Arg, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;

/// Where one part (q, k, v or the attention output) sits in a token-major tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLayout {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Row stride of the token-major tensor (3C for fused qkv, C otherwise).
    pub row_stride: usize,
    /// First column of this part within a row.
    pub col: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    b: u32,
    t: u32,
    h: u32,
    d: u32,
    s: u32,
    col: u32,
    _pad: [u32; 2],
}

impl HeadLayout {
    fn head_major_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.head_dim
    }
    fn check(&self, op: &str, token_major: &Tensor, head_major: &Tensor) -> Result<Params> {
        check_f32(op, &[token_major, head_major])?;
        ensure!(
            self.col + self.heads * self.head_dim <= self.row_stride,
            "{op}: columns {}..{} do not fit a row of {}",
            self.col,
            self.col + self.heads * self.head_dim,
            self.row_stride
        );
        check_numel(
            op,
            "token-major tensor",
            token_major,
            self.batch * self.seq * self.row_stride,
        )?;
        check_numel(op, "head-major tensor", head_major, self.head_major_len())?;
        check_u32(op, "token-major elements", token_major.numel())?;
        Ok(Params {
            b: self.batch as u32,
            t: self.seq as u32,
            h: self.heads as u32,
            d: self.head_dim as u32,
            s: self.row_stride as u32,
            col: self.col as u32,
            _pad: [0; 2],
        })
    }
}

fn launch(
    gpu: &Gpu,
    entry: &'static str,
    p: Params,
    n: usize,
    src: &Tensor,
    dst: &Tensor,
) -> Result<Dispatch> {
    gpu.dispatch(
        &Kernel::new("heads", entry),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(src),
            Arg::ReadWrite(dst),
        ],
        grid_1d(
            (n as u32).div_ceil(WG),
            gpu.limits().max_compute_workgroups_per_dimension,
        ),
    )
}

/// head_major[b, h, t, i] = token_major[b, t, col + h·D + i]
pub fn to_heads(
    gpu: &Gpu,
    layout: &HeadLayout,
    token_major: &Tensor,
    head_major: &Tensor,
) -> Result<Dispatch> {
    let p = layout.check("to_heads", token_major, head_major)?;
    launch(
        gpu,
        "to_heads",
        p,
        layout.head_major_len(),
        token_major,
        head_major,
    )
}

/// token_major[b, t, col + h·D + i] = head_major[b, h, t, i]; other columns are untouched.
pub fn from_heads(
    gpu: &Gpu,
    layout: &HeadLayout,
    head_major: &Tensor,
    token_major: &Tensor,
) -> Result<Dispatch> {
    let p = layout.check("from_heads", token_major, head_major)?;
    launch(
        gpu,
        "from_heads",
        p,
        layout.head_major_len(),
        head_major,
        token_major,
    )
}
