//! References for `shaders/scatter.wgsl`: gather and scatter-add of rows by
//! id, in f64, and the GPU's exact f32 summation order.

fn valid(id: i32, v: usize) -> Option<usize> {
    (id >= 0 && (id as usize) < v).then_some(id as usize)
}

/// out[i, :] = table[g·V + ids[i], :] with g = i / m (m ids per group);
/// zeros for an id outside [0, V). `table` holds G·V rows of `c`.
pub fn gather_rows<T: Copy + Default>(
    ids: &[i32],
    m: usize,
    table: &[T],
    v: usize,
    c: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); ids.len() * c];
    for (i, &id) in ids.iter().enumerate() {
        if let Some(r) = valid(id, v) {
            let row = (i / m) * v + r;
            out[i * c..(i + 1) * c].copy_from_slice(&table[row * c..(row + 1) * c]);
        }
    }
    out
}

/// out[g·V + ids[i], :] += x[i, :] with g = i / m, summed in f64 and added
/// to the initial values once; ids outside [0, V) are dropped.
pub fn scatter_add_rows(ids: &[i32], m: usize, x: &[f32], v: usize, c: usize, out: &mut [f32]) {
    let mut acc = vec![0f64; out.len()];
    for (i, &id) in ids.iter().enumerate() {
        if let Some(r) = valid(id, v) {
            let row = (i / m) * v + r;
            for k in 0..c {
                acc[row * c + k] += x[i * c + k] as f64;
            }
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = (*o as f64 + a) as f32;
    }
}

/// The (id, position) pairs sorted by id then position, an id outside
/// [0, V) as u32::MAX: what `kernels::scatter::sort_ids` computes.
pub fn sorted_pairs(ids: &[i32], v: usize) -> Vec<[u32; 2]> {
    let mut p: Vec<[u32; 2]> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| [valid(id, v).map_or(u32::MAX, |r| r as u32), i as u32])
        .collect();
    p.sort_unstable();
    p
}

/// `kernels::scatter::scatter_add_rows` with `accumulate`, in f32 and in the
/// GPU's order, bit for bit: each id's rows summed in increasing position
/// order, the sum restarted at every multiple of `chunk` sorted positions
/// and the pieces added left to right, then the total added to `out`.
pub fn segment_sum_f32(ids: &[i32], x: &[f32], v: usize, c: usize, chunk: usize, out: &mut [f32]) {
    let pairs = sorted_pairs(ids, v);
    let mut j = 0;
    while j < pairs.len() && pairs[j][0] != u32::MAX {
        let key = pairs[j][0];
        let mut end = j;
        while end < pairs.len() && pairs[end][0] == key {
            end += 1;
        }
        for k in 0..c {
            let mut total: Option<f32> = None;
            let mut piece = 0f32;
            for (s, pair) in pairs.iter().enumerate().take(end).skip(j) {
                piece += x[pair[1] as usize * c + k];
                if s + 1 == end || (s + 1) % chunk == 0 {
                    total = Some(total.map_or(piece, |t| t + piece));
                    piece = 0.0;
                }
            }
            let o = key as usize * c + k;
            out[o] += total.expect("a key has at least one row");
        }
        j = end;
    }
}
