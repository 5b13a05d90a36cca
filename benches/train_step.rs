//! The GPT training-step benchmark of `kiln bench train`, as a cargo bench
//! target:
//!
//! ```text
//! cargo bench --bench train_step -- [--preset tiny|small|gpt2-124m] [--batch B] [--seq T]
//!                                   [--steps N] [--warmup-steps N] [--profile] [--json FILE]
//! ```
//!
//! Takes the flags of `kiln bench` (`-- --help` lists them) and runs the same
//! code (`kiln::bench::cli`) with the family fixed to `train`.

use anyhow::{bail, Result};
use clap::Parser;

use kiln::bench::cli::{run, BenchArgs};

#[derive(Parser)]
#[command(name = "cargo bench --bench train_step --")]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> Result<()> {
    let argv = std::env::args().filter(|a| a != "--bench");
    let mut cli = Cli::parse_from(argv);
    if cli.args.families.iter().any(|f| f != "train") {
        bail!("this target runs the training step only; kernels are `cargo bench --bench kernels`");
    }
    cli.args.families = vec!["train".into()];
    run(&cli.args)
}
