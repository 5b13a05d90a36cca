//! The WGSL sources of `shaders/`, compiled into the binary so the engine
//! needs no files at run time (and works the same in the browser).
//!
//! Element types: a shader written over an element type declares
//! `alias elem = f32;` on a line of its own and stores floating-point data
//! as `array<elem>`, converting with `f32(..)` / `elem(..)` and computing in
//! f32. As written it is plain WGSL (the f32 variant, bit for bit what it
//! computes); [`with_elem`] makes the f16 variant by replacing that one line
//! and enabling the extension. Pipelines are cached per element type.

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
    "mse",
    "reduce",
    "layernorm",
    "softmax",
    "activation",
    "broadcast",
    "heads",
    "kldiv",
    "l2norm",
    "pooling",
    "crossentropy",
    "dropout",
    "embedding",
    "adamw",
    "guard",
    "attention",
    "accuracy",
    "scatter",
    "layout",
);

pub fn source(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The line a shader written over an element type declares.
pub const ELEM_ALIAS: &str = "alias elem = f32;";

/// The source of `name` for element type `elem`: unchanged for f32; for
/// f16, `enable f16;` first and the `elem` alias set to f16. A shader that
/// does not declare the alias has no other variant.
pub fn with_elem(
    name: &str,
    src: &'static str,
    elem: crate::runtime::DType,
) -> anyhow::Result<std::borrow::Cow<'static, str>> {
    use crate::runtime::DType;
    match elem {
        DType::F32 => Ok(src.into()),
        DType::F16 => {
            if !src.lines().any(|l| l.trim() == ELEM_ALIAS) {
                anyhow::bail!(
                    "shader {name} is written for f32 only (no `{ELEM_ALIAS}` line); it has no f16 variant"
                );
            }
            let body: String = src
                .lines()
                .map(|l| {
                    if l.trim() == ELEM_ALIAS {
                        "alias elem = f16;"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok(format!("enable f16;\n{body}\n").into())
        }
        other => anyhow::bail!(
            "shader {name}: {} is not a floating-point element type",
            other.name()
        ),
    }
}
