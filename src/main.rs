//! The `kiln` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};

use kiln::runtime::devices::adapter_reports;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln: GPU training engine on wgpu/WGSL"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every GPU adapter wgpu can see, with the limits and features Kiln uses.
    Devices {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd.unwrap_or(Cmd::Devices { json: false }) {
        Cmd::Devices { json } => devices(json),
    }
}

fn devices(json: bool) -> Result<()> {
    let backends = kiln::runtime::GpuOptions::from_env()?.backends;
    let reports = pollster::block_on(adapter_reports(backends));
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    if reports.is_empty() {
        println!(
            "No GPU adapters found. Install a Vulkan/Metal/DX12 driver; on Linux without a GPU, \
             `apt-get install mesa-vulkan-drivers` provides lavapipe (a CPU Vulkan driver)."
        );
        return Ok(());
    }
    for r in &reports {
        println!("{}\n", r.pretty());
    }
    let gpu = pollster::block_on(kiln::Gpu::from_env())?;
    println!(
        "Selected by default (KILN_ADAPTER / KILN_BACKEND to change): {}",
        gpu.describe()
    );
    Ok(())
}
