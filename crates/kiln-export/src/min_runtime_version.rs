//! The `min_runtime_version` metadata entry: the oldest TensorFlow Lite runtime release that
//! has kernels for every (operator, version) a model uses, as the TFLite converter writes it
//! (e.g. "1.14.0" for a full-integer CNN, "2.17.0" for a dynamic-range one). Runtimes do not
//! enforce it; it tells a deployer which runtime release the file needs.
//!
//! The converter looks each operator's (builtin code, version) up in a fixed table and keeps
//! the highest release by numeric comparison of its dot-separated components; pairs missing
//! from the table count for nothing, so a model whose operators are all missing gets no value.
//! The table below holds the facts of TensorFlow's
//! `tensorflow/compiler/mlir/lite/tools/versioning/runtime_version.cc` for the operators
//! kiln-runtime implements, as of TF 2.21 (the converter Kiln matches; see
//! tests/fixtures/manifest.json).

use std::cmp::Ordering;

use kiln_tflite::{BuiltinOp, Model};

/// For each operator, the runtime release that introduced version n, at index n − 1 (every
/// operator here has versions 1, 2, … without gaps).
///
/// TensorFlow's table also has ADD v6 and MUL v8 ("2.23.0"), TRANSPOSE v8 and DEQUANTIZE v8
/// ("2.22.0"): they were added after 2.21, so TF 2.21's converter gives those versions no
/// value and neither do we.
const RUNTIME_VERSIONS: &[(BuiltinOp, &[&str])] = &[
    (
        BuiltinOp::ADD,
        &["1.5.0", "1.14.0", "2.4.0", "2.6.0", "2.13.0"],
    ),
    (BuiltinOp::AVERAGE_POOL_2D, &["1.5.0", "1.14.0", "2.3.0"]),
    (
        BuiltinOp::CONCATENATION,
        &["1.5.0", "1.14.0", "2.3.0", "2.14.0", "2.21.0"],
    ),
    (
        BuiltinOp::CONV_2D,
        &[
            "1.5.0", "1.14.0", "1.14.0", "2.3.0", "2.4.0", "2.9.0", "2.11.0", "2.15.0",
        ],
    ),
    (
        BuiltinOp::DEPTHWISE_CONV_2D,
        &[
            "1.5.0", "1.12.0", "1.14.0", "2.2.0", "2.3.0", "2.3.0", "2.11.0",
        ],
    ),
    (BuiltinOp::DEPTH_TO_SPACE, &["2.1.0", "2.5.0"]),
    (
        BuiltinOp::DEQUANTIZE,
        &[
            "1.13.1", "1.14.0", "1.15.0", "2.2.0", "2.7.0", "2.18.0", "2.21.0",
        ],
    ),
    (
        BuiltinOp::FULLY_CONNECTED,
        &[
            "1.5.0", "1.10.0", "1.14.0", "1.14.0", "2.0.0", "2.1.0", "2.3.0", "2.3.0", "2.3.0",
            "2.11.0", "2.15.0", "2.17.0", "2.18.0", "2.21.0",
        ],
    ),
    (BuiltinOp::LOGISTIC, &["1.14.0", "1.14.0", "2.3.0"]),
    (BuiltinOp::MAX_POOL_2D, &["1.5.0", "1.14.0", "2.3.0"]),
    (
        BuiltinOp::MUL,
        &[
            "1.5.0", "1.14.0", "1.15.0", "2.3.0", "2.6.0", "2.11.0", "2.13.0",
        ],
    ),
    (BuiltinOp::RELU, &["1.5.0", "2.1.0", "2.5.0"]),
    (BuiltinOp::RELU_N1_TO_1, &["1.5.0"]),
    (BuiltinOp::RELU6, &["1.5.0", "1.14.0", "2.5.0"]),
    (BuiltinOp::RESHAPE, &["1.5.0"]),
    (
        BuiltinOp::RESIZE_BILINEAR,
        &["1.7.0", "1.14.0", "2.2.0", "2.5.0"],
    ),
    (BuiltinOp::SOFTMAX, &["1.5.0", "1.14.0", "2.3.0"]),
    (BuiltinOp::TANH, &["1.14.0", "1.14.0", "2.3.0"]),
    (
        BuiltinOp::PAD,
        &["1.5.0", "1.14.0", "2.4.0", "2.6.0", "2.20.0"],
    ),
    (
        BuiltinOp::TRANSPOSE,
        &[
            "1.6.0", "1.14.0", "1.15.0", "2.3.0", "2.4.0", "2.12.0", "2.14.4",
        ],
    ),
    (BuiltinOp::MEAN, &["1.6.0", "1.14.0", "2.4.0"]),
    (
        BuiltinOp::SUB,
        &["1.6.0", "1.14.0", "2.3.0", "2.4.0", "2.4.0"],
    ),
    (BuiltinOp::SQUEEZE, &["1.6.0", "2.5.0"]),
    (
        BuiltinOp::STRIDED_SLICE,
        &[
            "1.6.0", "1.14.0", "2.1.0", "2.2.0", "2.5.0", "2.6.0", "2.14.0", "2.14.0",
        ],
    ),
    (BuiltinOp::PRELU, &["1.8.0"]),
    (
        BuiltinOp::PADV2,
        &["1.9.0", "1.14.0", "2.4.0", "2.6.0", "2.20.0"],
    ),
    (BuiltinOp::SHAPE, &["1.10.0"]),
    (BuiltinOp::PACK, &["1.11.0", "1.14.0", "2.3.0", "2.13.0"]),
    (BuiltinOp::LEAKY_RELU, &["1.13.1", "2.3.0"]),
    (
        BuiltinOp::QUANTIZE,
        &["1.14.0", "1.15.0", "2.7.0", "2.21.0", "2.21.0", "2.21.0"],
    ),
    (BuiltinOp::HARD_SWISH, &["1.15.0"]),
    (BuiltinOp::DENSIFY, &["2.2.0"]),
];

/// The `min_runtime_version` the TFLite converter would write for `model`: the highest
/// release among its operators' (code, version) pairs, `None` when none is in the table.
///
/// Every operator of every subgraph counts; operator codes that no operator uses do not, and
/// neither does an operator whose code index is out of range.
pub fn min_runtime_version(model: &Model) -> Option<String> {
    model
        .subgraphs
        .iter()
        .flat_map(|subgraph| &subgraph.operators)
        .filter_map(|op| model.opcode_of(op))
        .filter_map(|code| runtime_version_of(code.builtin, code.version))
        .max_by(|a, b| compare_versions(a, b))
        .map(str::to_owned)
}

fn runtime_version_of(op: BuiltinOp, version: i32) -> Option<&'static str> {
    let (_, releases) = RUNTIME_VERSIONS.iter().find(|(o, _)| *o == op)?;
    let index = usize::try_from(version).ok()?.checked_sub(1)?;
    releases.get(index).copied()
}

/// Orders dotted release strings component by component as numbers, so "1.10.0" > "1.9.0"
/// (string order would say the opposite). Where one is a prefix of the other, the longer is
/// greater; a component that is not a number compares equal to anything, as in TensorFlow.
fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) => {
                if let (Ok(x), Ok(y)) = (x.parse::<u64>(), y.parse::<u64>())
                    && x != y
                {
                    return x.cmp(&y);
                }
            }
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (None, None) => return Ordering::Equal,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kiln_tflite::{BuiltinOptions, Operator, Subgraph};

    use super::*;
    use crate::test_model::small_cnn;
    use crate::{to_dynamic_range, to_float16};

    fn operator(model: &mut Model, op: BuiltinOp, version: i32) -> Operator {
        Operator {
            opcode_index: model.intern_opcode(op, version),
            inputs: Vec::new(),
            outputs: Vec::new(),
            options: BuiltinOptions::None,
            custom_options: None,
            intermediates: Vec::new(),
        }
    }

    /// A model with one subgraph per list, each running the listed (operator, version)s;
    /// tensors are irrelevant to the value.
    fn model_with(subgraphs: &[&[(BuiltinOp, i32)]]) -> Model {
        let mut model = Model::new("min_runtime_version test");
        for ops in subgraphs {
            let operators = ops
                .iter()
                .map(|&(op, version)| operator(&mut model, op, version))
                .collect();
            model.subgraphs.push(Subgraph {
                operators,
                ..Default::default()
            });
        }
        model
    }

    #[test]
    fn known_table_entries() {
        let cases = [
            (BuiltinOp::CONV_2D, 1, "1.5.0"),
            (BuiltinOp::CONV_2D, 3, "1.14.0"),
            (BuiltinOp::CONV_2D, 5, "2.4.0"),
            (BuiltinOp::DEPTHWISE_CONV_2D, 2, "1.12.0"),
            (BuiltinOp::FULLY_CONNECTED, 4, "1.14.0"),
            (BuiltinOp::FULLY_CONNECTED, 5, "2.0.0"),
            (BuiltinOp::FULLY_CONNECTED, 12, "2.17.0"),
            (BuiltinOp::SOFTMAX, 1, "1.5.0"),
            (BuiltinOp::SOFTMAX, 2, "1.14.0"),
            (BuiltinOp::DEQUANTIZE, 3, "1.15.0"),
            (BuiltinOp::LEAKY_RELU, 1, "1.13.1"),
            (BuiltinOp::TRANSPOSE, 7, "2.14.4"),
            (BuiltinOp::DENSIFY, 1, "2.2.0"),
        ];
        for (op, version, expected) in cases {
            assert_eq!(
                runtime_version_of(op, version),
                Some(expected),
                "{op} v{version}"
            );
        }
    }

    #[test]
    fn pairs_outside_the_table_have_no_value() {
        for (op, version) in [
            (BuiltinOp::CONV_2D, 0),
            (BuiltinOp::CONV_2D, -1),
            (BuiltinOp::CONV_2D, 9),
            (BuiltinOp::ADD, 6),
            (BuiltinOp::TRANSPOSE, 8),
            (BuiltinOp::SOFTMAX, 4),
            (BuiltinOp::CUSTOM, 1),
            (BuiltinOp(9999), 1),
        ] {
            assert_eq!(runtime_version_of(op, version), None, "{op} v{version}");
        }
    }

    #[test]
    fn table_lists_each_operator_once_with_well_formed_releases() {
        let mut ops: Vec<BuiltinOp> = RUNTIME_VERSIONS.iter().map(|(op, _)| *op).collect();
        ops.sort();
        ops.dedup();
        assert_eq!(ops.len(), RUNTIME_VERSIONS.len());
        let entries: usize = RUNTIME_VERSIONS.iter().map(|(_, r)| r.len()).sum();
        assert_eq!(entries, 133);
        for (op, releases) in RUNTIME_VERSIONS {
            for pair in releases.windows(2) {
                assert_ne!(
                    compare_versions(pair[0], pair[1]),
                    Ordering::Greater,
                    "{op}: a later version needs an older runtime"
                );
            }
            for release in *releases {
                let parts: Vec<&str> = release.split('.').collect();
                assert_eq!(parts.len(), 3, "{op}: {release}");
                assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()), "{release}");
            }
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10.0", "1.9.0"), Ordering::Greater);
        assert_eq!(compare_versions("2.0.0", "1.15.0"), Ordering::Greater);
        assert_eq!(compare_versions("1.13.1", "1.13.0"), Ordering::Greater);
        assert_eq!(compare_versions("2.14.4", "2.14.10"), Ordering::Less);
        assert_eq!(compare_versions("1.14.0", "1.14.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.14", "1.14.0"), Ordering::Less);
        assert_eq!(compare_versions("1.14.0", "1.14"), Ordering::Greater);
        assert_eq!(compare_versions("", "1.5.0"), Ordering::Less);
        assert_eq!(compare_versions("1.x.0", "1.7.0"), Ordering::Equal);
    }

    #[test]
    fn the_model_gets_the_highest_release_of_its_operators() {
        let model = model_with(&[&[
            (BuiltinOp::CONV_2D, 3),
            (BuiltinOp::SOFTMAX, 1),
            (BuiltinOp::FULLY_CONNECTED, 5),
            (BuiltinOp::RESHAPE, 1),
        ]]);
        assert_eq!(min_runtime_version(&model).as_deref(), Some("2.0.0"));
        // String order would pick "1.9.0".
        let model = model_with(&[&[(BuiltinOp::PADV2, 1), (BuiltinOp::FULLY_CONNECTED, 2)]]);
        assert_eq!(min_runtime_version(&model).as_deref(), Some("1.10.0"));
    }

    #[test]
    fn operators_outside_the_table_do_not_count() {
        let model = model_with(&[&[(BuiltinOp::ADD, 6), (BuiltinOp::MUL, 1)]]);
        assert_eq!(min_runtime_version(&model).as_deref(), Some("1.5.0"));
        let model = model_with(&[&[(BuiltinOp::CUSTOM, 1), (BuiltinOp::CONV_2D, 99)]]);
        assert_eq!(min_runtime_version(&model), None);
    }

    #[test]
    fn every_subgraph_counts_but_unused_operator_codes_do_not() {
        let model = model_with(&[&[(BuiltinOp::RELU, 1)], &[(BuiltinOp::DEPTH_TO_SPACE, 2)]]);
        assert_eq!(min_runtime_version(&model).as_deref(), Some("2.5.0"));
        let mut model = model_with(&[&[(BuiltinOp::RELU, 1)]]);
        model.intern_opcode(BuiltinOp::FULLY_CONNECTED, 13);
        assert_eq!(min_runtime_version(&model).as_deref(), Some("1.5.0"));
    }

    #[test]
    fn an_operator_with_a_bad_code_index_is_skipped() {
        let mut model = model_with(&[&[(BuiltinOp::RELU, 1)]]);
        model.subgraphs[0].operators[0].opcode_index = 7;
        assert_eq!(min_runtime_version(&model), None);
    }

    #[test]
    fn an_empty_model_has_no_value() {
        assert_eq!(min_runtime_version(&Model::new("empty")), None);
        assert_eq!(min_runtime_version(&model_with(&[&[]])), None);
    }

    #[test]
    fn exported_variants_match_the_converter_fixtures() {
        // smallnet_float16 (DEQUANTIZE v3) is "1.15.0" and hybrid_dynamic_range (FULLY_CONNECTED
        // v12) "2.17.0" in tests/fixtures.
        let model = small_cnn();
        assert_eq!(min_runtime_version(&model).as_deref(), Some("1.5.0"));
        let float16 = to_float16(&model).unwrap();
        assert_eq!(min_runtime_version(&float16).as_deref(), Some("1.15.0"));
        let dynamic = to_dynamic_range(&model).unwrap();
        assert_eq!(min_runtime_version(&dynamic).as_deref(), Some("2.17.0"));
    }

    #[test]
    fn agrees_with_every_converter_fixture() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let mut checked = 0;
        for entry in std::fs::read_dir(&fixtures).unwrap() {
            let path = entry.unwrap().path().join("model.tflite");
            if !path.is_file() {
                continue;
            }
            let model = Model::read_file(&path).unwrap();
            let written = model
                .metadata_bytes("min_runtime_version")
                .map(|b| String::from_utf8_lossy(b).trim_end_matches('\0').to_owned());
            assert_eq!(min_runtime_version(&model), written, "{}", path.display());
            checked += 1;
        }
        assert!(checked >= 28, "only {checked} fixtures found");
    }
}
