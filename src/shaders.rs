//! The WGSL sources of `shaders/`, compiled into the binary so the engine
//! needs no files at run time (and works the same in the browser).

macro_rules! shaders {
    ($($name:literal),* $(,)?) => {
        /// (name, source) for every kernel family.
        pub const ALL: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../shaders/", $name, ".wgsl")))),*
        ];
    };
}

shaders!(
    "elementwise",
    "matmul",
    "reduce",
    "layernorm",
    "softmax",
    "gelu",
    "heads",
    "crossentropy",
    "embedding",
    "adamw",
    "guard",
    "attention",
);

pub fn source(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
