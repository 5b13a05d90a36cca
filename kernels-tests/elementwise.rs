//! elementwise.wgsl: add, add_inplace, scale, copy, fill (exact in f32).

use crate::common::*;
use kiln::kernels::elementwise as ew;
use kiln::reference::elementwise as r;

const SIZES: [usize; 6] = [1, 7, 255, 256, 257, 10_007];

#[test]
fn add_and_inplace_add_match_reference() {
    let mut rng = Rng::new(11);
    for n in SIZES {
        let a = rand_vec(&mut rng, n);
        let b = rand_vec(&mut rng, n);
        let (ta, tb, out) = (upload(&[n], &a), upload(&[n], &b), poisoned(&[n]));
        run(&ew::add(gpu(), &ta, &tb, &out).unwrap());
        let want = r::add(&a, &b);
        assert_close("add", &read(&out), &want, 0.0, 0.0);
        run(&ew::add_inplace(gpu(), &ta, &tb).unwrap());
        assert_close("add_inplace", &read(&ta), &want, 0.0, 0.0);
    }
}

#[test]
fn copy_fill_match_reference() {
    let mut rng = Rng::new(12);
    for n in SIZES {
        let a = rand_vec(&mut rng, n);
        let ta = upload(&[n], &a);
        let out = poisoned(&[n]);
        run(&ew::copy(gpu(), &ta, &out).unwrap());
        assert_same_bits("copy", &read(&out), &a);
        run(&ew::fill(gpu(), &out, 3.25).unwrap());
        assert!(read(&out).iter().all(|v| *v == 3.25));
    }
}

#[test]
fn large_tensor_uses_a_2d_grid() {
    // 70_000 workgroups of 256 exceed 65_535 along one axis.
    let n = 70_000 * 256 + 3;
    let t = gpu().zeros(&[n], kiln::DType::F32).unwrap();
    run(&ew::fill(gpu(), &t, 1.5).unwrap());
    let v = read(&t);
    assert!(v.iter().all(|x| *x == 1.5), "some element was not filled");
}

#[test]
fn shape_mismatch_is_a_clear_error() {
    let a = upload(&[3, 4], &[0.0; 12]);
    let b = upload(&[4, 3], &[0.0; 12]);
    let err = ew::add(gpu(), &a, &b, &a).unwrap_err().to_string();
    assert!(err.contains("shape"), "{err}");
    let i = upload_i32(&[12], &[0; 12]);
    let err = ew::copy(gpu(), &i, &a).unwrap_err().to_string();
    assert!(err.contains("i32"), "{err}");
}

/// The same kernels in f16 storage (f32 arithmetic), where the adapter has
/// shader-f16: every result is the f32 result rounded once to f16.
#[test]
fn f16_variants_match_the_f32_result_rounded() {
    if !gpu().features().contains(wgpu::Features::SHADER_F16) {
        eprintln!("skipped: {} has no shader-f16", gpu().describe());
        return;
    }
    let h =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect() };
    let read16 = |t: &kiln::Tensor| pollster::block_on(t.read_f16_as_f32(gpu())).unwrap();
    let mut rng = Rng::new(16);
    for n in [1, 7, 257, 1001] {
        let (a, b) = (h(&rand_vec(&mut rng, n)), h(&rand_vec(&mut rng, n)));
        let ta = gpu().upload_f16(&[n], &a).unwrap();
        let tb = gpu().upload_f16(&[n], &b).unwrap();
        let out = gpu().upload_f16(&[n], &vec![f32::NAN; n]).unwrap();
        run(&ew::add(gpu(), &ta, &tb, &out).unwrap());
        assert_same_bits("add f16", &read16(&out), &h(&r::add(&a, &b)));
        run(&ew::copy(gpu(), &ta, &out).unwrap());
        assert_same_bits("copy f16", &read16(&out), &a);
        run(&ew::add_inplace(gpu(), &ta, &tb).unwrap());
        assert_same_bits("add_inplace f16", &read16(&ta), &h(&r::add(&a, &b)));
        run(&ew::fill(gpu(), &out, 3.25).unwrap());
        assert!(read16(&out).iter().all(|v| *v == 3.25));
    }
    // Mixed element types in one call are refused, naming them.
    let (x, y) = (
        upload(&[4], &[1.0; 4]),
        gpu().upload_f16(&[4], &[1.0; 4]).unwrap(),
    );
    let err = ew::copy(gpu(), &x, &y).unwrap_err().to_string();
    assert!(err.contains("f16") && err.contains("f32"), "{err}");
}
