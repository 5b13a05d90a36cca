//! Prints where the time of one GPT training pass goes, by kernel.
//! `cargo run --release --example profile_gpt -- [layers embd heads batch seq vocab]`

use kiln::bench::profile::profile_steps;
use kiln::graph::Executor;
use kiln::model::{build, for_run, init_params, param_shapes, BuildOptions, Dims, ModelDims};

fn main() -> anyhow::Result<()> {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("numbers"))
        .collect();
    let get = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    let (layers, embd, heads, batch, seq, vocab) = (
        get(0, 2),
        get(1, 64),
        get(2, 4),
        get(3, 8),
        get(4, 64),
        get(5, 256),
    );
    let gpu = pollster::block_on(kiln::Gpu::from_env())?;
    let model = for_run(
        "gpt2",
        &ModelDims {
            n_layer: layers,
            n_head: heads,
            n_embd: embd,
            n_positions: seq,
            vocab_size: vocab,
            ..Default::default()
        },
    )?;
    let shapes = param_shapes(model.as_ref())?;
    let params = kiln::model::upload_params(&gpu, &shapes, &init_params(model.as_ref(), 1)?)?;
    let layout = model.input_specs(Dims { batch, seq });
    let g = build(
        model.as_ref(),
        &layout,
        &BuildOptions {
            training: true,
            ..Default::default()
        },
    )?;
    let exec = Executor::new(&gpu, g.graph, &params)?;
    println!(
        "GPT L{layers} C{embd} H{heads} B{batch} T{seq} V{vocab} on {}",
        gpu.describe()
    );
    let shares = profile_steps(&gpu, &exec, 3)?;
    let total: f64 = shares.iter().map(|s| s.ms).sum();
    for s in &shares {
        println!(
            "{:<20} {:>4} steps {:>9.2} ms {:>5.1}%  {:>7.3} GFLOP/s",
            s.name,
            s.steps,
            s.ms,
            100.0 * s.ms / total,
            s.gflop / (s.ms / 1e3)
        );
    }
    println!("total {total:.1} ms");
    Ok(())
}
