//! Matrix multiply (`shaders/matmul.wgsl`), the kernel most of training time
//! goes to:
//!
//! `C[b] = alpha · op(A[b]) · op(B[b]) + bias + beta · C[b]` for every batch item `b`,
//!
//! with `op` the identity or a transpose, f32 accumulation in increasing `k`
//! order (deterministic: no split-K, no atomics).
//!
//! Layouts (all row-major f32, any tensor shape as long as it holds enough
//! elements): `A` is `[M, K]`, or `[K, M]` with `trans_a`; `B` is `[K, N]`,
//! or `[N, K]` with `trans_b`; `C` is `[M, N]`; `bias` is `[N]`, added to
//! every row. Batch item `b` of each operand starts `b · stride` elements in;
//! stride 0 broadcasts one matrix to every item (not allowed for `C`).
//!
//! Several implementations ([`MatmulVariant`]) compute the same thing; they
//! exist to be benchmarked against each other (`cargo bench --bench matmul`)
//! and [`default_variant`] picks one per shape class.

use anyhow::{bail, ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::check_f32;
use crate::runtime::{Arg, Dispatch, Gpu, Kernel, Tensor};

/// What to multiply: sizes, layouts, batch strides and scale factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulSpec {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A is stored `[K, M]` row-major when true, else `[M, K]`.
    pub trans_a: bool,
    /// B is stored `[N, K]` row-major when true, else `[K, N]`.
    pub trans_b: bool,
    /// Elements between consecutive batch items; 0 broadcasts the same matrix.
    pub stride_a: usize,
    pub stride_b: usize,
    /// Must be at least `M·N` when `batch > 1` (items may not overlap).
    pub stride_c: usize,
    /// Scales the product (default 1).
    pub alpha: f32,
    /// 0 overwrites C without reading it; otherwise `C = … + beta·C`
    /// (gradient accumulation).
    pub beta: f32,
}

impl MatmulSpec {
    /// `C = A·B` for one `[M, K] × [K, N]` product: batch 1, no transposes,
    /// contiguous strides, alpha 1, beta 0.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            batch: 1,
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
            alpha: 1.0,
            beta: 0.0,
        }
    }
    /// `batch` items stored back to back (contiguous strides).
    pub fn batched(mut self, batch: usize) -> Self {
        self.batch = batch;
        self.stride_a = self.m * self.k;
        self.stride_b = self.k * self.n;
        self.stride_c = self.m * self.n;
        self
    }
    pub fn trans_a(mut self, t: bool) -> Self {
        self.trans_a = t;
        self
    }
    pub fn trans_b(mut self, t: bool) -> Self {
        self.trans_b = t;
        self
    }
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    pub fn beta(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }
    /// Batch strides in elements (0 = broadcast, for A and B only).
    pub fn strides(mut self, a: usize, b: usize, c: usize) -> Self {
        self.stride_a = a;
        self.stride_b = b;
        self.stride_c = c;
        self
    }
    /// Floating-point operations of the product (2·batch·M·N·K).
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }
    /// Elements each operand must hold at least: `(batch−1)·stride + matrix`.
    pub(crate) fn needed(&self) -> Option<(usize, usize, usize)> {
        let need = |stride: usize, rows: usize, cols: usize| {
            let last = (self.batch - 1).checked_mul(stride)?;
            last.checked_add(rows.checked_mul(cols)?)
        };
        Some((
            need(self.stride_a, self.m, self.k)?,
            need(self.stride_b, self.k, self.n)?,
            need(self.stride_c, self.m, self.n)?,
        ))
    }
}

/// One implementation of the matmul. Every variant is correct for every
/// shape; they differ in speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MatmulVariant {
    /// One thread per output element, 16×16 threads, no data reuse.
    Naive,
    /// A `bm × bn` output tile per workgroup; K is walked in steps of `bk`
    /// through workgroup memory and each thread accumulates a `tm × tn`
    /// register tile (`tm`, `tn` ∈ {4, 8}; `bk` a multiple of 4). With
    /// `vec4`, each operand whose contiguous dimension and batch stride are
    /// multiples of 4 is read with 16-byte loads (the others stay scalar).
    Tiled {
        bm: u32,
        bn: u32,
        bk: u32,
        tm: u32,
        tn: u32,
        vec4: bool,
    },
    /// No workgroup memory: each of 8×8 threads accumulates a `tm × tn`
    /// register tile (multiples of 4, at most 16) from operands read straight
    /// from global memory, four steps of K at a time (vec4 loads as for
    /// `Tiled`). Relies on caches for reuse, which suits CPU adapters
    /// (lavapipe), where every memory access is a per-lane loop and a
    /// workgroup-memory round trip is pure overhead.
    Direct { tm: u32, tn: u32, vec4: bool },
}

impl MatmulVariant {
    pub fn name(&self) -> String {
        match *self {
            MatmulVariant::Naive => "naive".into(),
            MatmulVariant::Tiled {
                bm,
                bn,
                bk,
                tm,
                tn,
                vec4,
            } => format!(
                "tiled {bm}x{bn}x{bk} reg {tm}x{tn}{}",
                if vec4 { " vec4" } else { "" }
            ),
            MatmulVariant::Direct { tm, tn, vec4 } => {
                format!("direct reg {tm}x{tn}{}", if vec4 { " vec4" } else { "" })
            }
        }
    }
    /// Output rows and columns one workgroup covers.
    fn tile(&self) -> (u32, u32) {
        match *self {
            MatmulVariant::Naive => (NAIVE_WG, NAIVE_WG),
            MatmulVariant::Tiled { bm, bn, .. } => (bm, bn),
            MatmulVariant::Direct { tm, tn, .. } => (DIRECT_WG * tm, DIRECT_WG * tn),
        }
    }
}

const NAIVE_WG: u32 = 16;
/// Threads along each axis of a `Direct` workgroup.
const DIRECT_WG: u32 = 8;

fn tiled(bm: u32, bn: u32, bk: u32, tm: u32, tn: u32, vec4: bool) -> MatmulVariant {
    MatmulVariant::Tiled {
        bm,
        bn,
        bk,
        tm,
        tn,
        vec4,
    }
}

fn direct(tm: u32, tn: u32, vec4: bool) -> MatmulVariant {
    MatmulVariant::Direct { tm, tn, vec4 }
}

/// Every variant worth benchmarking, with a display name.
pub fn variants() -> Vec<(String, MatmulVariant)> {
    [
        MatmulVariant::Naive,
        tiled(32, 32, 8, 4, 4, false),
        tiled(32, 32, 8, 4, 4, true),
        tiled(64, 64, 16, 4, 4, true),
        tiled(64, 64, 16, 8, 8, true),
        tiled(128, 64, 8, 8, 4, true),
        tiled(128, 128, 8, 8, 8, true),
        direct(4, 4, true),
        direct(8, 8, false),
        direct(8, 8, true),
        direct(8, 16, true),
        direct(16, 16, false),
        direct(16, 16, true),
    ]
    .into_iter()
    .map(|v| (v.name(), v))
    .collect()
}

/// The variant [`matmul`] uses for `spec` on this device when the autotuner
/// has no measured choice for the shape ([`super::matmul_tune`]), from the
/// measurements in BENCHMARKS.md.
///
/// CPU adapters (lavapipe) get the workgroup-memory kernel with 64×64×16
/// tiles and 8×8 per thread for everything but large products, and `Direct`
/// with the largest register tile for those (M, N and K ≥ 256). At training
/// shapes the two run at the same speed (the tiled one up to 2× faster at
/// K ≤ 64), but llvmpipe compiles a `Direct` pipeline for 4–10 s (its 16×16
/// register tile is 256 unrolled accumulators per lane) against 0.5–0.7 s
/// for a tiled one, and it compiles at the first dispatch: with `Direct`
/// everywhere the first training step of the default model took 24 s from a
/// cold shader cache, with the tiled kernel 4 s. For large products `Direct`
/// 16×16 is 2× the tiled kernel and its compile pays off; with a transposed
/// A it is capped at 8×8, as lavapipe (Mesa 22.3) leaks host memory on every
/// dispatch of the 16-wide transposed-A kernel (2.3 MB each; issue 10's
/// soak, tests `default_transposed_a_matmul_does_not_grow_host_memory`).
///
/// GPUs get the workgroup-memory kernel: 128×128×8 tiles with 8×8 per thread
/// (256 threads) when both M and N reach 128, the classic SGEMM
/// configuration, 64×64×16 with 4×4 per thread for mid-sized shapes and
/// 32×32×8 for small or skinny ones, where bigger tiles would leave most of
/// the GPU idle. The GPU choice is not yet measured here (no GPU on the
/// development machine); `kiln bench matmul --variant all` or the
/// autotuner (`--tune`) settles it per adapter.
pub fn default_variant(gpu: &Gpu, spec: &MatmulSpec) -> MatmulVariant {
    if gpu.is_cpu() {
        if spec.m < 256 || spec.n < 256 || spec.k < 256 {
            return tiled(64, 64, 16, 8, 8, true);
        }
        let most = if spec.trans_a { 8 } else { 16 };
        return direct(most, most, true);
    }
    let (m, n) = (spec.m, spec.n);
    if m >= 128 && n >= 128 {
        tiled(128, 128, 8, 8, 8, true)
    } else if m >= 64 && n >= 64 {
        tiled(64, 64, 16, 4, 4, true)
    } else {
        tiled(32, 32, 8, 4, 4, true)
    }
}

/// The variant [`matmul`] runs for `spec`: the autotuner's measured choice
/// for this shape on this adapter and driver when it has one (tuning it
/// first when tuning is on), else [`default_variant`]. Every variant gives
/// the same bits, so the choice changes speed only.
pub fn choose_variant(gpu: &Gpu, spec: &MatmulSpec) -> MatmulVariant {
    super::matmul_tune::choice(gpu, spec).unwrap_or_else(|| default_variant(gpu, spec))
}

/// `C = alpha·op(A)·op(B) + bias + beta·C` with the variant [`choose_variant`] picks.
pub fn matmul(
    gpu: &Gpu,
    spec: &MatmulSpec,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
) -> Result<Dispatch> {
    matmul_with(gpu, spec, choose_variant(gpu, spec), a, b, bias, c)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    tiles_m: u32,
    alpha: f32,
    beta: f32,
    has_bias: u32,
    _pad: u32,
}

/// Checks the variant's parameters against the shader's assumptions and the
/// device limits.
fn check_variant(gpu: &Gpu, v: &MatmulVariant) -> Result<()> {
    if let MatmulVariant::Direct { tm, tn, .. } = *v {
        ensure!(
            [tm, tn].iter().all(|t| *t > 0 && t % 4 == 0 && *t <= 16),
            "matmul variant {}: register tile sides must be 4, 8, 12 or 16",
            v.name()
        );
        return Ok(());
    }
    let MatmulVariant::Tiled {
        bm, bn, bk, tm, tn, ..
    } = *v
    else {
        return Ok(());
    };
    let name = v.name();
    ensure!(
        matches!(tm, 4 | 8) && matches!(tn, 4 | 8),
        "matmul variant {name}: register tile must be 4 or 8 in each direction"
    );
    ensure!(
        bm % tm == 0 && bn % tn == 0 && bk > 0 && bk % 4 == 0,
        "matmul variant {name}: bm must be a multiple of tm, bn of tn, bk of 4"
    );
    let threads = (bm / tm) * (bn / tn);
    let lim = gpu.limits();
    ensure!(
        threads <= lim.max_compute_invocations_per_workgroup
            && threads <= lim.max_compute_workgroup_size_x,
        "matmul variant {name}: {threads} threads per workgroup exceed this device's limit ({})",
        lim.max_compute_invocations_per_workgroup
    );
    let shared = 4 * bk * (bm + bn);
    ensure!(
        shared <= lim.max_compute_workgroup_storage_size,
        "matmul variant {name}: {shared} bytes of workgroup memory exceed this device's limit ({})",
        lim.max_compute_workgroup_storage_size
    );
    Ok(())
}

/// Whether A and B can be read with 16-byte loads: their contiguous
/// dimension and (for batches) their batch stride must be multiples of 4.
/// Tensor offsets are always 256-byte aligned.
pub(crate) fn vec4_operands(s: &MatmulSpec, wanted: bool) -> (bool, bool) {
    let stride = |x: usize| if s.batch == 1 { 0 } else { x };
    let a_contig = if s.trans_a { s.m } else { s.k };
    let b_contig = if s.trans_b { s.k } else { s.n };
    (
        wanted && a_contig % 4 == 0 && stride(s.stride_a) % 4 == 0,
        wanted && b_contig % 4 == 0 && stride(s.stride_b) % 4 == 0,
    )
}

/// Like [`matmul`] with an explicit variant (for benchmarks and tests).
pub fn matmul_with(
    gpu: &Gpu,
    spec: &MatmulSpec,
    variant: MatmulVariant,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
) -> Result<Dispatch> {
    let s = spec;
    let mut all = vec![a, b, c];
    all.extend(bias);
    check_f32("matmul", &all)?;
    ensure!(
        s.batch >= 1 && s.m >= 1 && s.n >= 1 && s.k >= 1,
        "matmul: batch, M, N and K must all be at least 1 (got batch {}, M {}, N {}, K {})",
        s.batch,
        s.m,
        s.n,
        s.k
    );
    let Some((need_a, need_b, need_c)) = s.needed() else {
        bail!("matmul: operand sizes overflow for {s:?}");
    };
    let a_layout = if s.trans_a { "[K, M]" } else { "[M, K]" };
    let b_layout = if s.trans_b { "[N, K]" } else { "[K, N]" };
    for (what, t, need, layout, stride) in [
        ("A", a, need_a, a_layout, s.stride_a),
        ("B", b, need_b, b_layout, s.stride_b),
        ("C", c, need_c, "[M, N]", s.stride_c),
    ] {
        if t.numel() < need {
            bail!(
                "matmul: {what} has {} elements (shape {:?}) but needs at least {need} \
                 = (batch − 1)·stride + matrix, for batch {}, stride {stride}, {what} {layout} \
                 with M {}, N {}, K {}",
                t.numel(),
                t.shape(),
                s.batch,
                s.m,
                s.n,
                s.k
            );
        }
        if need > u32::MAX as usize {
            bail!("matmul: {what} spans {need} elements, beyond 32-bit indexing");
        }
    }
    if let Some(bias) = bias {
        ensure!(
            bias.numel() == s.n,
            "matmul: bias has {} elements (shape {:?}), expected N = {}",
            bias.numel(),
            bias.shape(),
            s.n
        );
    }
    if s.batch > 1 && s.stride_c < s.m * s.n {
        bail!(
            "matmul: stride_c = {} is less than M·N = {}, so batch items of C would overlap",
            s.stride_c,
            s.m * s.n
        );
    }
    for (what, t) in [("A", Some(a)), ("B", Some(b)), ("bias", bias)] {
        if t.is_some_and(|t| t.shares_storage(c)) {
            bail!("matmul: C shares its buffer with {what}; the output must be a separate tensor");
        }
    }
    check_variant(gpu, &variant)?;

    // Strides do not matter for a single item (and may then be anything).
    let eff = |stride: usize| if s.batch == 1 { 0 } else { stride };
    let (bm, bn) = variant.tile();
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let tiles_m = s.m.div_ceil(bm as usize);
    let tiles_n = s.n.div_ceil(bn as usize);
    let z = s.batch.min(max);
    let fold = s.batch.div_ceil(z);
    if tiles_n > max || tiles_m * fold > max {
        bail!(
            "matmul: {} × {} tiles of {bm}×{bn} over batch {} need a grid of {tiles_n} × {} × {z} \
             workgroups, beyond this device's {max} per dimension",
            tiles_m,
            tiles_n,
            s.batch,
            tiles_m * fold
        );
    }
    let params = Params {
        m: s.m as u32,
        n: s.n as u32,
        k: s.k as u32,
        batch: s.batch as u32,
        stride_a: eff(s.stride_a) as u32,
        stride_b: eff(s.stride_b) as u32,
        stride_c: eff(s.stride_c) as u32,
        tiles_m: tiles_m as u32,
        alpha: s.alpha,
        beta: s.beta,
        has_bias: bias.is_some() as u32,
        _pad: 0,
    };

    let trans = |kernel: Kernel| {
        kernel
            .constant("TRANS_A", s.trans_a as u32)
            .constant("TRANS_B", s.trans_b as u32)
    };
    let kernel = match variant {
        MatmulVariant::Naive => trans(Kernel::new("matmul", "naive"))
            .constant("NX", NAIVE_WG)
            .constant("NY", NAIVE_WG),
        MatmulVariant::Tiled {
            bm,
            bn,
            bk,
            tm,
            tn,
            vec4,
        } => {
            // 16-byte loads need the contiguous dimension and the batch
            // stride in multiples of 4 (tensor offsets are 256-byte aligned).
            let entry = match vec4_operands(s, vec4) {
                (false, false) => "tiled_ss",
                (true, false) => "tiled_vs",
                (false, true) => "tiled_sv",
                (true, true) => "tiled_vv",
            };
            trans(Kernel::new("matmul", entry))
                .constant("BM", bm)
                .constant("BN", bn)
                .constant("BK", bk)
                .constant("TM", tm)
                .constant("TN", tn)
        }
        MatmulVariant::Direct { tm, tn, vec4 } => {
            let entry = match vec4_operands(s, vec4) {
                (false, false) => "direct_ss",
                (true, false) => "direct_vs",
                (false, true) => "direct_sv",
                (true, true) => "direct_vv",
            };
            trans(Kernel::new("matmul", entry))
                .constant("DM", tm)
                .constant("DN", tn)
                .constant("DX", DIRECT_WG)
                .constant("DY", DIRECT_WG)
        }
    };
    // Without a bias, binding 3 still needs a buffer: A, which is not read.
    let args = [
        Arg::Uniform(bytemuck::bytes_of(&params)),
        Arg::Read(a),
        Arg::Read(b),
        Arg::Read(bias.unwrap_or(a)),
        Arg::ReadWrite(c),
    ];
    let mut d = gpu.dispatch(
        &kernel,
        &args,
        [tiles_n as u32, (tiles_m * fold) as u32, z as u32],
    )?;
    d.label = format!("matmul {} ({})", variant.name(), d.label);
    Ok(d)
}
