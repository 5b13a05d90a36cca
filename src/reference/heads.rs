//! Reference for `shaders/heads.wgsl`.

/// [B, T, S] → [B, H, T, D], taking columns col..col + H·D of each row.
pub fn to_heads(
    src: &[f32],
    b: usize,
    t: usize,
    h: usize,
    d: usize,
    s: usize,
    col: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; b * h * t * d];
    for bi in 0..b {
        for hi in 0..h {
            for ti in 0..t {
                for i in 0..d {
                    out[((bi * h + hi) * t + ti) * d + i] =
                        src[(bi * t + ti) * s + col + hi * d + i];
                }
            }
        }
    }
    out
}

/// Writes [B, H, T, D] into columns col..col + H·D of `dst` [B, T, S].
#[allow(clippy::too_many_arguments)]
pub fn from_heads(
    src: &[f32],
    dst: &mut [f32],
    b: usize,
    t: usize,
    h: usize,
    d: usize,
    s: usize,
    col: usize,
) {
    for bi in 0..b {
        for hi in 0..h {
            for ti in 0..t {
                for i in 0..d {
                    dst[(bi * t + ti) * s + col + hi * d + i] =
                        src[((bi * h + hi) * t + ti) * d + i];
                }
            }
        }
    }
}
