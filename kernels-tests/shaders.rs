//! Every file in `shaders/` parses and validates with naga (no GPU needed),
//! is compiled into the crate, and uses no floating-point atomics.

use std::path::Path;

fn shader_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("readable shader"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no shaders found in {}", dir.display());
    out
}

#[test]
fn every_shader_parses_and_validates_with_naga() {
    let mut failures = Vec::new();
    for (name, src) in shader_files() {
        let module = match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!(
                    "{name}.wgsl: parse error:\n{}",
                    e.emit_to_string(&src)
                ));
                continue;
            }
        };
        let mut v = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        );
        if let Err(e) = v.validate(&module) {
            failures.push(format!(
                "{name}.wgsl: validation error:\n{}",
                e.emit_to_string(&src)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_shader_file_is_compiled_in() {
    for (name, src) in shader_files() {
        let embedded = kiln::shaders::source(&name)
            .unwrap_or_else(|| panic!("shaders/{name}.wgsl is not listed in src/shaders.rs"));
        assert_eq!(
            embedded, src,
            "shaders/{name}.wgsl differs from the embedded copy"
        );
    }
}

#[test]
fn no_floating_point_atomics() {
    for (name, src) in shader_files() {
        for bad in ["atomic<f32>", "atomic<f16>"] {
            assert!(
                !src.contains(bad),
                "shaders/{name}.wgsl uses {bad}: not portable, not deterministic"
            );
        }
    }
}

/// Shaders written over an element type (`alias elem = f32;`) also parse
/// and validate in their f16 variant, as the pipeline cache builds it.
#[test]
fn f16_variants_validate_with_naga() {
    let mut n = 0;
    for (name, _) in shader_files() {
        let Ok(src) = kiln::shaders::with_elem(
            &name,
            kiln::shaders::source(&name).unwrap(),
            kiln::DType::F16,
        ) else {
            continue; // an f32-only shader
        };
        n += 1;
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{name} (f16): {}", e.emit_to_string(&src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name} (f16): {}", e.emit_to_string(&src)));
    }
    assert!(n >= 1, "no shader is written over an element type");
}
