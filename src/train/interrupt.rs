//! Ctrl-C during training: the first SIGINT asks the run loop to finish the
//! current step, save a checkpoint and stop (the CLI then exits 130); a
//! second one exits at once. Only the CLI installs the handler; library
//! users (tests, the web front end) never see a request.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells use.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Installs the SIGINT handler (once per process).
pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("\nkiln: interrupted again: exiting now");
            std::process::exit(EXIT_INTERRUPTED);
        }
        eprintln!(
            "\nkiln: interrupted: finishing this step and saving a checkpoint \
             (Ctrl-C again to exit at once)"
        );
    })
    .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
