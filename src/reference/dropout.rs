//! References for `shaders/dropout.wgsl`: Philox4x32-10 and the dropout
//! mask it gives, bit for bit.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds (Random123's `philox4x32`).
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The keep mask of `n` elements: element i keeps when word i % 4 of
/// Philox((i / 4, stream, rng[2], rng[3]), (rng[0], rng[1])) ≥ threshold.
pub fn mask(n: usize, rng: [u32; 4], stream: u32, threshold: u32) -> Vec<bool> {
    let mut m = Vec::with_capacity(n);
    for block in 0..n.div_ceil(4) {
        let r = philox4x32_10([block as u32, stream, rng[2], rng[3]], [rng[0], rng[1]]);
        for (j, w) in r.iter().enumerate() {
            if block * 4 + j < n {
                m.push(*w >= threshold);
            }
        }
    }
    m
}

/// y = x·mask·scale in f64.
pub fn apply(x: &[f64], rng: [u32; 4], stream: u32, threshold: u32, scale: f64) -> Vec<f64> {
    mask(x.len(), rng, stream, threshold)
        .iter()
        .zip(x)
        .map(|(&k, &v)| if k { v * scale } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors for philox4x32_10.
    #[test]
    fn philox_matches_random123_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }
}
