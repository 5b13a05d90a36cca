//! CPU reference implementations of every kernel, accumulating in f64. The
//! kernel tests compare the GPU against these; they favour the obvious loop
//! over speed.

pub mod activation;
pub mod adamw;
pub mod attention;
pub mod broadcast;
pub mod compare;
pub mod crossentropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gelu;
pub mod gpt;
pub mod heads;
pub mod l2norm;
pub mod layernorm;
pub mod layout;
pub mod losses;
pub mod matmul;
pub mod pooling;
pub mod reduce;
pub mod scatter;
pub mod softmax;
