//! References for `shaders/embedding.wgsl`, in f64.

/// out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :] for tokens [B, T] (flat,
/// t = i mod T), wte [V, C], wpe [maxT, C]. Tokens outside [0, V) give wpe[t].
pub fn embedding_forward(tokens: &[i32], t: usize, wte: &[f32], wpe: &[f32], c: usize) -> Vec<f32> {
    let v = wte.len() / c;
    let mut out = Vec::with_capacity(tokens.len() * c);
    for (i, &tok) in tokens.iter().enumerate() {
        let pos = i % t;
        for k in 0..c {
            let w = if tok >= 0 && (tok as usize) < v {
                wte[tok as usize * c + k] as f64
            } else {
                0.0
            };
            out.push((w + wpe[pos * c + k] as f64) as f32);
        }
    }
    out
}

/// dwte[v] += Σ_{i: tokens[i] = v} dout[i]; dwpe[t] += Σ_b dout[b·T + t]
/// (sums in f64, added to the initial values once). Out-of-range tokens are
/// skipped.
pub fn embedding_backward(
    tokens: &[i32],
    t: usize,
    dout: &[f32],
    dwte: &mut [f32],
    dwpe: &mut [f32],
    c: usize,
) {
    let v = dwte.len() / c;
    let mut gte = vec![0f64; dwte.len()];
    let mut gpe = vec![0f64; dwpe.len()];
    for (i, &tok) in tokens.iter().enumerate() {
        let pos = i % t;
        for k in 0..c {
            let g = dout[i * c + k] as f64;
            if tok >= 0 && (tok as usize) < v {
                gte[tok as usize * c + k] += g;
            }
            gpe[pos * c + k] += g;
        }
    }
    for (d, g) in dwte.iter_mut().zip(&gte) {
        *d = (*d as f64 + g) as f32;
    }
    for (i, (d, g)) in dwpe.iter_mut().zip(&gpe).enumerate() {
        if i < t * c {
            *d = (*d as f64 + g) as f32;
        }
    }
}
