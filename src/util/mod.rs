//! Small shared helpers.

pub mod rng;

pub use rng::Rng;
