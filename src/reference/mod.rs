//! CPU reference implementations of every kernel, accumulating in f64. The
//! kernel tests compare the GPU against these; they favour the obvious loop
//! over speed.

pub mod adamw;
pub mod attention;
pub mod compare;
pub mod crossentropy;
pub mod elementwise;
pub mod embedding;
pub mod gelu;
pub mod gpt;
pub mod heads;
pub mod layernorm;
pub mod layout;
pub mod matmul;
pub mod reduce;
pub mod scatter;
pub mod softmax;
