//! Validation of the f64 CPU GPT-2 reference (`kiln::reference::gpt`):
//! (a) against PyTorch fixtures written by `scripts/gpt_reference.py`, and
//! (b) against central finite differences of its own f64 loss.
//!
//! Fixtures (PyTorch computes in f32, we in f64):
//!   gpt_reference.safetensors   V=512 T=64 C=128 H=4 L=2 B=4
//!     python3 scripts/gpt_reference.py --out tests/fixtures/gpt_reference.safetensors
//!   gpt_tiny_v37.safetensors    V=37 T=7 C=12 H=3 L=1 B=2
//!     python3 scripts/gpt_reference.py --out tests/fixtures/gpt_tiny_v37.safetensors \
//!       --vocab 37 --seq 7 --embd 12 --heads 3 --layers 1 --batch 2 --seed 7
//!   gpt_small_v64.safetensors   V=64 T=16 C=32 H=2 L=2 B=3
//!     python3 scripts/gpt_reference.py --out tests/fixtures/gpt_small_v64.safetensors \
//!       --vocab 64 --seq 16 --embd 32 --heads 2 --layers 2 --batch 3 --seed 42

use std::collections::HashMap;
use std::path::Path;

use kiln::reference::gpt::{forward_backward, param_shapes, GptShape};
use kiln::util::Rng;

// ---------------------------------------------------------------------------
// A minimal safetensors reader (F32 and I32 only).

struct Entry {
    dtype: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

struct SafeTensors {
    tensors: HashMap<String, Entry>,
    metadata: HashMap<String, String>,
}

impl SafeTensors {
    fn load(path: &Path) -> SafeTensors {
        let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let n = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&raw[8..8 + n]).expect("header");
        let data = &raw[8 + n..];
        let mut tensors = HashMap::new();
        let mut metadata = HashMap::new();
        for (name, v) in header.as_object().expect("header object") {
            if name == "__metadata__" {
                for (k, val) in v.as_object().expect("metadata") {
                    metadata.insert(k.clone(), val.as_str().unwrap().to_string());
                }
                continue;
            }
            let dtype = v["dtype"].as_str().unwrap().to_string();
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect::<Vec<_>>();
            let off = v["data_offsets"].as_array().unwrap();
            let (b, e) = (
                off[0].as_u64().unwrap() as usize,
                off[1].as_u64().unwrap() as usize,
            );
            assert_eq!(e - b, 4 * shape.iter().product::<usize>(), "{name}: size");
            let bytes = data[b..e].to_vec();
            tensors.insert(
                name.clone(),
                Entry {
                    dtype,
                    shape,
                    bytes,
                },
            );
        }
        SafeTensors { tensors, metadata }
    }

    fn get(&self, name: &str, dtype: &str) -> &Entry {
        let e = self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name}"));
        assert_eq!(e.dtype, dtype, "{name}: dtype");
        e
    }

    fn f32(&self, name: &str) -> Vec<f32> {
        let e = self.get(name, "F32");
        e.bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn i32(&self, name: &str) -> Vec<i32> {
        let e = self.get(name, "I32");
        e.bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn meta(&self, key: &str) -> usize {
        self.metadata[key]
            .parse()
            .unwrap_or_else(|_| panic!("metadata {key}"))
    }
}

// ---------------------------------------------------------------------------
// (a) PyTorch parity

struct Tolerances {
    logits_abs: f64,
    loss_abs: f64,
    grad_abs: f64,
    grad_rel: f64,
}

fn check_fixture(file: &str, tol: &Tolerances) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    let st = SafeTensors::load(&path);
    let s = GptShape {
        vocab_size: st.meta("vocab_size"),
        n_positions: st.meta("n_positions"),
        n_embd: st.meta("n_embd"),
        n_head: st.meta("n_head"),
        n_layer: st.meta("n_layer"),
        eps: st.metadata["layer_norm_epsilon"].parse().unwrap(),
    };
    let (batch, seq) = (st.meta("batch"), st.meta("seq"));
    assert_eq!(st.get("inputs", "I32").shape, vec![batch, seq]);
    let shapes = param_shapes(&s);
    let params: Vec<Vec<f32>> = shapes
        .iter()
        .map(|(name, shape)| {
            assert_eq!(
                &st.get(&format!("param.{name}"), "F32").shape,
                shape,
                "{name}"
            );
            st.f32(&format!("param.{name}"))
        })
        .collect();
    assert_eq!(
        st.tensors.len(),
        2 * shapes.len() + 5,
        "unexpected tensors in fixture"
    );

    let t0 = std::time::Instant::now();
    let out = forward_backward(
        &s,
        &params,
        &st.i32("inputs"),
        &st.i32("targets"),
        batch,
        seq,
    );
    let elapsed = t0.elapsed();

    let ref_logits = st.f32("logits");
    assert_eq!(out.logits.len(), ref_logits.len());
    let logits_abs = max_abs_diff(&out.logits, &ref_logits);
    let loss_abs = (out.loss - st.f32("loss")[0] as f64).abs();
    // grad_excess: the largest |ours - ref| - grad_rel |ref|, i.e. what
    // grad_abs must at least be; grad_rel: the largest relative error over
    // elements with |ref| > 1e-4.
    let (mut grad_excess, mut grad_abs, mut grad_rel) = (f64::NEG_INFINITY, 0.0f64, 0.0f64);
    let mut worst = String::new();
    for ((name, _), (gname, g)) in shapes.iter().zip(&out.grads) {
        assert_eq!(name, gname);
        let r = st.f32(&format!("grad.{name}"));
        assert_eq!(g.len(), r.len(), "{name}");
        for (i, (&a, &b)) in g.iter().zip(&r).enumerate() {
            let (b, d) = (b as f64, (a - b as f64).abs());
            let excess = d - tol.grad_rel * b.abs();
            if excess > grad_excess {
                grad_excess = excess;
                worst = format!("{name}[{i}]: ours {a:e}, torch {b:e}");
            }
            grad_abs = grad_abs.max(d);
            if b.abs() > 1e-4 {
                grad_rel = grad_rel.max(d / b.abs());
            }
        }
    }
    eprintln!(
        "{file}: forward+backward {elapsed:.2?}, loss {:.7}; max errors: logits {logits_abs:.2e}, \
         loss {loss_abs:.2e}, gradients {grad_abs:.2e} abs, {grad_rel:.2e} rel (|ref| > 1e-4), \
         {grad_excess:.2e} beyond {:e}|ref|",
        out.loss, tol.grad_rel
    );
    eprintln!("{file}: worst gradient element {worst}");
    assert!(
        logits_abs <= tol.logits_abs,
        "{file}: logits err {logits_abs:e}"
    );
    assert!(loss_abs <= tol.loss_abs, "{file}: loss err {loss_abs:e}");
    assert!(
        grad_excess <= tol.grad_abs,
        "{file}: gradient err beyond {:e} + {:e}|ref|: {worst}",
        tol.grad_abs,
        tol.grad_rel
    );
}

fn max_abs_diff(a: &[f64], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x - y as f64).abs())
        .fold(0.0, f64::max)
}

/// PyTorch works in f32, so its rounding sets these. Largest errors seen
/// (V512 / V37 / V64 fixtures):
///   logits         5.5e-7 / 3.5e-8 / 8.1e-8
///   loss           1.0e-7 / 7.0e-8 / 1.2e-7
///   gradients      |err| - 1e-4 |ref| <= 4.2e-9 / 1.0e-9 / 2.9e-9
///                  (max |err| 3.1e-8 / 3.9e-8 / 4.3e-8; max relative err
///                  where |ref| > 1e-4: 9.1e-5 / 2.0e-5 / 4.4e-5, f32
///                  accumulation in PyTorch's matmuls)
/// These are all PyTorch's f32 rounding: the same model run by PyTorch in
/// f64 on the fixture's parameters differs from the fixture by the same
/// amounts to three digits.
/// The tolerances sit a few times above, tighter than the 1e-5 / 1e-6 /
/// 1e-6 + 1e-4 |ref| budget.
const TOL: Tolerances = Tolerances {
    logits_abs: 2e-6,
    loss_abs: 5e-7,
    grad_abs: 2e-8,
    grad_rel: 1e-4,
};

#[test]
fn matches_pytorch_v512_c128() {
    check_fixture("gpt_reference.safetensors", &TOL);
}

#[test]
fn matches_pytorch_v37_c12() {
    check_fixture("gpt_tiny_v37.safetensors", &TOL);
}

#[test]
fn matches_pytorch_v64_c32() {
    check_fixture("gpt_small_v64.safetensors", &TOL);
}

// ---------------------------------------------------------------------------
// (b) Finite differences

/// Central-difference step: a power of two near 1e-5, so that with
/// parameters on a 2^-12 grid `p ± H` is exact in f32 and the step really
/// taken is exactly `2 H`.
const H: f64 = 1.0 / 131072.0; // 2^-17 ≈ 7.6e-6

/// Random parameters on a 2^-12 grid (|p| < 8), larger than GPT-2's init so
/// attention and GELU are well away from linear.
fn grid_params(s: &GptShape, rng: &mut Rng) -> Vec<Vec<f32>> {
    param_shapes(s)
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let (mean, std) = if name.contains(".ln_") && name.ends_with(".weight") {
                (1.0, 0.2)
            } else {
                (0.0, 0.3)
            };
            (0..n)
                .map(|_| (((mean + std * rng.normal()) * 4096.0).round() / 4096.0) as f32)
                .collect()
        })
        .collect()
}

fn fd_check(s: &GptShape, batch: usize, seq: usize, seed: u64, masked: &[usize]) {
    let mut rng = Rng::new(seed);
    let params = grid_params(s, &mut rng);
    let v = s.vocab_size as u64;
    let inputs: Vec<i32> = (0..batch * seq).map(|_| rng.below(v) as i32).collect();
    let mut targets: Vec<i32> = (0..batch * seq).map(|_| rng.below(v) as i32).collect();
    for &i in masked {
        targets[i] = -1;
    }
    let out = forward_backward(s, &params, &inputs, &targets, batch, seq);
    let loss_at = |p: &[Vec<f32>]| forward_backward(s, p, &inputs, &targets, batch, seq).loss;

    // Every parameter of the tiny model is checked, not a sample.
    let mut p = params.clone();
    let (mut checked, mut worst_rel, mut worst_ratio) = (0usize, 0.0f64, 0.0f64);
    for (k, (name, g)) in out.grads.iter().enumerate() {
        for i in 0..g.len() {
            let x = params[k][i];
            let (up, down) = ((x as f64 + H) as f32, (x as f64 - H) as f32);
            assert_eq!(up as f64 - down as f64, 2.0 * H, "step not exact");
            p[k][i] = up;
            let lp = loss_at(&p);
            p[k][i] = down;
            let lm = loss_at(&p);
            p[k][i] = x;
            let fd = (lp - lm) / (2.0 * H);
            let an = g[i];
            // Roundoff in the loss (~1e-15) over 2H gives ~1e-10 absolute.
            let tol = 1e-6 * an.abs().max(fd.abs()) + 1e-9;
            assert!(
                (fd - an).abs() <= tol,
                "{name}[{i}]: analytic {an:e}, finite difference {fd:e}"
            );
            worst_ratio = worst_ratio.max((fd - an).abs() / tol);
            if an.abs() > 1e-3 {
                worst_rel = worst_rel.max((fd - an).abs() / an.abs());
            }
            checked += 1;
        }
    }
    eprintln!(
        "finite differences {s:?} B={batch} T={seq}: {checked} parameters, loss {:.6}, \
         max relative err (|grad| > 1e-3) {worst_rel:.2e}, max err / tolerance {worst_ratio:.2}",
        out.loss
    );
}

#[test]
fn finite_differences_two_layers_masked() {
    let s = GptShape {
        vocab_size: 11,
        n_positions: 6,
        n_embd: 8,
        n_head: 2,
        n_layer: 2,
        eps: 1e-5,
    };
    // seq < n_positions, so the last wpe row must get a zero gradient.
    fd_check(&s, 2, 5, 1, &[0, 3, 7]);
}

#[test]
fn finite_differences_one_layer_four_heads() {
    let s = GptShape {
        vocab_size: 7,
        n_positions: 4,
        n_embd: 8,
        n_head: 4,
        n_layer: 1,
        eps: 1e-5,
    };
    fd_check(&s, 3, 4, 2, &[5]);
}

#[test]
fn ignored_targets_are_left_out_of_the_mean() {
    let s = GptShape {
        vocab_size: 9,
        n_positions: 5,
        n_embd: 8,
        n_head: 2,
        n_layer: 1,
        eps: 1e-5,
    };
    let mut rng = Rng::new(3);
    let params = grid_params(&s, &mut rng);
    let inputs: Vec<i32> = (0..10).map(|_| rng.below(9) as i32).collect();
    let targets: Vec<i32> = (0..10).map(|_| rng.below(9) as i32).collect();
    let full = forward_backward(&s, &params, &inputs, &targets, 2, 5);
    // Per-position losses from the logits.
    let nll = |r: usize, t: i32| {
        let z = &full.logits[r * 9..(r + 1) * 9];
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln() - z[t as usize]
    };
    let mut masked = targets.clone();
    masked[2] = -1;
    masked[9] = -1;
    let part = forward_backward(&s, &params, &inputs, &masked, 2, 5);
    let want: f64 = (0..10)
        .filter(|&r| masked[r] >= 0)
        .map(|r| nll(r, masked[r]))
        .sum::<f64>()
        / 8.0;
    assert!((part.loss - want).abs() < 1e-12, "{} vs {want}", part.loss);
    assert_eq!(full.logits, part.logits);

    let none = forward_backward(&s, &params, &inputs, &[-1; 10], 2, 5);
    assert_eq!(none.loss, 0.0);
    assert!(none.grads.iter().all(|(_, g)| g.iter().all(|&x| x == 0.0)));
}

#[test]
fn tiny_configs_are_fast() {
    // The largest "tiny" config: V=64, C=32, T=16, L=2, B=3.
    let s = GptShape {
        vocab_size: 64,
        n_positions: 16,
        n_embd: 32,
        n_head: 4,
        n_layer: 2,
        eps: 1e-5,
    };
    let mut rng = Rng::new(4);
    let params = grid_params(&s, &mut rng);
    let inputs: Vec<i32> = (0..48).map(|_| rng.below(64) as i32).collect();
    let targets: Vec<i32> = (0..48).map(|_| rng.below(64) as i32).collect();
    let t0 = std::time::Instant::now();
    let out = forward_backward(&s, &params, &inputs, &targets, 3, 16);
    let dt = t0.elapsed();
    eprintln!("V=64 C=32 T=16 L=2 B=3: {dt:.2?}");
    assert!(out.loss.is_finite());
    assert!(dt.as_secs_f64() < 1.0, "took {dt:.2?}");
}
