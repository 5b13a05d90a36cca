//! The kernel sweep of `kiln bench`, as a cargo bench target:
//!
//! ```text
//! cargo bench --bench kernels -- [FAMILY...] [--sizes LIST] [--variant all] [--iters N]
//!                                [--json FILE] [--peak-gflops X] [--peak-gbps Y] ...
//! ```
//!
//! Takes exactly the flags of `kiln bench` (`-- --help` lists them) and runs
//! the same code (`kiln::bench::cli`); `train` belongs to
//! `cargo bench --bench train_step`.

use anyhow::{bail, Result};
use clap::Parser;

use kiln::bench::cli::{run, BenchArgs};

#[derive(Parser)]
#[command(name = "cargo bench --bench kernels --")]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> Result<()> {
    // `cargo bench` appends `--bench`; it means nothing here.
    let argv = std::env::args().filter(|a| a != "--bench");
    let cli = Cli::parse_from(argv);
    if cli.args.families.iter().any(|f| f == "train") {
        bail!("the training step is `cargo bench --bench train_step`");
    }
    run(&cli.args)
}
