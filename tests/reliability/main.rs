//! Reliability (issue 10): hostile inputs through the `kiln` binary, the
//! kill-at-every-point crash test, and runs that check each defect's fix.

mod common;
mod crash;
mod hostile;
mod runs;
