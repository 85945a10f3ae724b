//! The generated sources against real converter files: the array holds the file's bytes, the
//! resolver names the file's operators, and g++ accepts both files against a stub of TFLM's
//! resolver header that declares TFLM's real method names.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        repo()
            .join("tests/fixtures")
            .join(name)
            .join("model.tflite"),
    )
    .unwrap()
}

/// The bytes of the `.cc`'s array, parsed back.
fn array_bytes(source: &str) -> Vec<u8> {
    let body = source
        .split_once("= {")
        .unwrap()
        .1
        .split_once("};")
        .unwrap()
        .0;
    body.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).unwrap())
        .collect()
}

/// `g++ -fsyntax-only` on the sources and on a program that uses them as firmware would.
pub(crate) fn compile(dir: &Path, sources: &MicroSources) {
    let main = dir.join("main.cc");
    let namespace = format!(
        "kiln_{}",
        c_identifier(sources.header_name.trim_end_matches("_data.h"))
    );
    std::fs::write(
        &main,
        format!(
            "#include \"{header}\"\n\
             #include <cstdint>\n\
             alignas(16) static uint8_t arena[{namespace}::kTensorArenaSize];\n\
             int main() {{\n\
               static {namespace}::OpResolver resolver;\n\
               if ({namespace}::RegisterOps(resolver) != kTfLiteOk) return 1;\n\
               return arena[0] + static_cast<int>(resolver.GetRegistrationLength());\n\
             }}\n",
            header = sources.header_name
        ),
    )
    .unwrap();
    let stub = repo().join("crates/kiln-pipeline/tests/fixtures/tflm_stub");
    for file in [dir.join(&sources.source_name), main] {
        let out = Command::new("g++")
            .args(["-std=c++17", "-fsyntax-only", "-Wall", "-Werror", "-I"])
            .arg(&stub)
            .arg("-I")
            .arg(dir)
            .arg(&file)
            .output()
            .expect("g++ runs (the toolchain's C compiler is on every build machine)");
        assert!(
            out.status.success(),
            "g++ rejected {}:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sources_hold_the_file_and_its_operators_and_compile() {
    for (fixture_name, operators) in [
        ("conv_int8", &["CONV_2D"][..]),
        (
            "pool_pad_mean_int8",
            &["AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "PAD", "PADV2"][..],
        ),
        (
            "activations_int8",
            &[
                "HARD_SWISH",
                "LEAKY_RELU",
                "LOGISTIC",
                "PRELU",
                "RELU",
                "RELU6",
                "SUB",
                "TANH",
            ][..],
        ),
    ] {
        let bytes = fixture(fixture_name);
        let sources = sources(&bytes, "model_int8").unwrap();
        assert_eq!(sources.header_name, "model_int8_data.h");
        assert_eq!(array_bytes(&sources.source), bytes, "{fixture_name}");
        assert!(
            sources
                .source
                .contains("alignas(16) const unsigned char g_model_int8_data[]"),
            "{fixture_name}"
        );
        assert!(sources.header.contains(&format!(
            "constexpr unsigned int g_model_int8_data_size = {};",
            bytes.len()
        )));
        let mut found: Vec<&str> = sources
            .registrations
            .iter()
            .map(|r| r.operator.as_str())
            .collect();
        found.sort_unstable();
        let mut expected = operators.to_vec();
        expected.sort_unstable();
        assert_eq!(found, expected, "{fixture_name}");
        let arena = sources.arena;
        assert!(arena.activations > 0 && arena.total >= arena.activations + arena.bookkeeping);
        assert_eq!(arena.total % 1024, 0);
        assert!(
            sources
                .header
                .contains(&format!("kTensorArenaSize = {};", arena.total))
        );

        let dir =
            std::env::temp_dir().join(format!("kiln-micro-{fixture_name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&sources.header_name), &sources.header).unwrap();
        std::fs::write(dir.join(&sources.source_name), &sources.source).unwrap();
        compile(&dir, &sources);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn identifiers_are_valid_c() {
    assert_eq!(c_identifier("model_pruned80_int8"), "model_pruned80_int8");
    assert_eq!(c_identifier("8bit-model.v2"), "_8bit_model_v2");
}

#[test]
fn a_model_tflm_cannot_run_is_an_error_naming_the_operator() {
    // The converter's sparse file keeps its weights behind DENSIFY, which TFLM lacks.
    let error = sources(&fixture("sparse_densify_int8"), "model")
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(error.contains("DENSIFY"), "{error}");
    let error = sources(b"not a model", "model").err().unwrap().to_string();
    assert!(error.contains("not a valid TFLite model"), "{error}");
}
