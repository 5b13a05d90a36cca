//! Runtime: upload/download, the pool, limit errors, the pipeline cache.

use crate::common::*;
use kiln::runtime::DType;

#[test]
fn upload_download_roundtrip_f32_and_i32() {
    let mut rng = Rng::new(1);
    for n in [1usize, 3, 64, 1000, 4097] {
        let x = rand_vec(&mut rng, n);
        assert_same_bits("f32 roundtrip", &read(&upload(&[n], &x)), &x);
        let xi: Vec<i32> = (0..n as i32).map(|i| i * 7 - 3).collect();
        assert_eq!(read_i32(&upload_i32(&[n], &xi)), xi);
    }
}

#[test]
fn zeros_are_zero_even_from_a_dirty_pool() {
    let g = gpu();
    drop(upload(&[777], &vec![5.0; 777]));
    let z = g.zeros(&[777], DType::F32).unwrap();
    assert!(read(&z).iter().all(|v| *v == 0.0));
}

#[test]
fn pool_reuses_released_buffers() {
    let g = gpu();
    let shape = [12345usize];
    let before = g.pool_stats();
    for _ in 0..4 {
        drop(g.empty(&shape, DType::F32).unwrap());
    }
    let after = g.pool_stats();
    // Other tests run concurrently, so only bound what this test caused.
    assert!(
        after.buffers_reused >= before.buffers_reused + 3,
        "{before:?} -> {after:?}"
    );
}

#[test]
fn oversized_tensor_names_the_limit() {
    let g = gpu();
    let too_big = (g.limits().max_buffer_size / 4 + 1) as usize;
    let err = g.empty(&[too_big], DType::F32).unwrap_err().to_string();
    assert!(err.contains("max_buffer_size"), "{err}");
    let binding_big = (g.limits().max_storage_buffer_binding_size / 4 + 1) as usize;
    if (binding_big as u64) * 4 <= g.limits().max_buffer_size {
        let err = g.empty(&[binding_big], DType::F32).unwrap_err().to_string();
        assert!(err.contains("max_storage_buffer_binding_size"), "{err}");
    }
}

#[test]
fn too_many_workgroups_names_the_limit() {
    let g = gpu();
    let t = upload(&[4], &[0.0; 4]);
    let p = [0u32; 4];
    let err = g
        .dispatch(
            &kiln::runtime::Kernel::new("elementwise", "fill"),
            &[
                kiln::runtime::Arg::Uniform(bytemuck::bytes_of(&p)),
                kiln::runtime::Arg::ReadWrite(&t),
            ],
            [g.limits().max_compute_workgroups_per_dimension + 1, 1, 1],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_compute_workgroups_per_dimension"),
        "{err}"
    );
}

#[test]
fn reshape_and_view_check_their_arguments() {
    let t = upload(&[4, 128], &vec![1.0; 512]);
    assert!(t.reshape(&[8, 64]).is_ok());
    assert!(t.reshape(&[3, 100]).is_err());
    let v = t.view(64, &[64]).unwrap(); // 256-byte aligned
    assert_eq!(read(&v), vec![1.0; 64]);
    assert!(t.view(1, &[4]).is_err(), "unaligned view must be refused");
    assert!(
        t.view(448, &[128]).is_err(),
        "view past the end must be refused"
    );
}
