//! `pipeline inspect`: what a `.tflite` holds — operators with versions, tensors with shapes,
//! types, quantization and sizes, and the arena kiln-runtime would plan for it.

use std::path::Path;

use anyhow::{Context, Result};
use kiln_runtime::{Interpreter, operator_name};
use kiln_tflite::Model;
use serde_json::{Value, json};

pub fn run(path: &Path, as_json: bool) -> Result<()> {
    let bytes = crate::model_file::map(path)?;
    let file_bytes = bytes.len();
    let model = Model::from_bytes(bytes.clone())
        .with_context(|| format!("cannot read {}", path.display()))?;
    // The runtime may refuse a model (e.g. an operator it lacks) that is still worth inspecting.
    let arena = match Interpreter::new(model.clone()) {
        Ok(interpreter) => Ok(interpreter.arena_bytes()),
        Err(e) => Err(e.to_string()),
    };
    let mut report = describe(&model, file_bytes, &arena);
    report["model_metadata"] = model_metadata(&model, bytes.as_slice());
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn describe(model: &Model, file_bytes: usize, arena: &Result<usize, String>) -> Value {
    let subgraphs: Vec<Value> = model
        .subgraphs
        .iter()
        .map(|subgraph| {
            let operators: Vec<Value> = subgraph
                .operators
                .iter()
                .enumerate()
                .map(|(i, op)| {
                    let (name, version) = model
                        .opcode_of(op)
                        .map_or(("<invalid opcode>".to_owned(), 0), |code| (operator_name(code), code.version));
                    json!({"index": i, "op": name, "version": version, "inputs": op.inputs, "outputs": op.outputs})
                })
                .collect();
            let tensors: Vec<Value> = subgraph
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let constant_bytes = model.tensor_data(t).len();
                    let quantization = t.quantization.as_ref().filter(|q| q.is_affine()).map(|q| {
                        json!({
                            "scale": q.scale, "zero_point": q.zero_point,
                            "quantized_dimension": q.quantized_dimension,
                        })
                    });
                    json!({
                        "index": i, "name": t.name, "type": t.dtype.name(), "shape": t.shape,
                        "bytes": t.byte_size(), "constant": constant_bytes > 0, "quantization": quantization,
                    })
                })
                .collect();
            json!({"name": subgraph.name, "inputs": subgraph.inputs, "outputs": subgraph.outputs,
                   "operators": operators, "tensors": tensors})
        })
        .collect();
    let constant_bytes: usize = model.buffers.iter().map(|b| b.data.len()).sum();
    json!({
        "version": model.version,
        "description": model.description,
        "file_bytes": file_bytes,
        "constant_bytes": constant_bytes,
        "arena_bytes": arena.as_ref().ok(),
        "runtime_error": arena.as_ref().err(),
        "operator_codes": model.operator_codes.iter().map(|c| json!({"op": operator_name(c), "version": c.version})).collect::<Vec<_>>(),
        "signatures": model.signature_defs.iter().map(|s| json!({
            "key": s.key,
            "inputs": s.inputs.iter().map(|m| json!({"name": m.name, "tensor": m.tensor_index})).collect::<Vec<_>>(),
            "outputs": s.outputs.iter().map(|m| json!({"name": m.name, "tensor": m.tensor_index})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "metadata": model.metadata.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
        "subgraphs": subgraphs,
    })
}

/// The `min_runtime_version` entry, the TFLite metadata (labels, normalisation, description)
/// and the associated files packed after the model, as far as they can be read.
fn model_metadata(model: &Model, file: &[u8]) -> Value {
    use kiln_tflite::metadata::{self, ModelMetadata};
    let runtime = model
        .metadata_bytes(metadata::MIN_RUNTIME_VERSION)
        .and_then(metadata::decode_runtime_version);
    let parsed = model
        .metadata_bytes(metadata::TFLITE_METADATA)
        .map(ModelMetadata::from_bytes);
    let files = kiln_runtime::associated_files(file);
    let labels = files.as_ref().ok().and_then(|files| {
        let wanted = parsed
            .as_ref()
            .and_then(|p| p.as_ref().ok())
            .and_then(|m| m.outputs.first())
            .and_then(|o| o.associated_files.first())
            .map_or(kiln_export::LABELS_FILE, |f| f.name.as_str());
        files
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, content)| {
                String::from_utf8_lossy(content)
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
    });
    let tensor = |t: &metadata::TensorMetadata| {
        json!({
            "name": t.name, "description": t.description,
            "image": t.image.map(|i| json!({"color_space": format!("{:?}", i.color_space), "width": i.width, "height": i.height})),
            "normalization": t.normalization.as_ref().map(|n| json!({"mean": n.mean, "std": n.std})),
            "associated_files": t.associated_files.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        })
    };
    json!({
        "min_runtime_version": runtime,
        "metadata": match &parsed {
            None => Value::Null,
            Some(Ok(m)) => json!({
                "name": m.name, "description": m.description, "version": m.version, "author": m.author,
                "min_parser_version": m.min_parser_version,
                "inputs": m.inputs.iter().map(tensor).collect::<Vec<_>>(),
                "outputs": m.outputs.iter().map(tensor).collect::<Vec<_>>(),
            }),
            Some(Err(e)) => json!({"error": e.to_string()}),
        },
        "associated_files": match &files {
            Ok(files) => json!(files.iter().map(|(name, content)| json!({"name": name, "bytes": content.len()})).collect::<Vec<_>>()),
            Err(e) => json!({"error": e.to_string()}),
        },
        "labels": labels,
    })
}

fn print_text(report: &Value) {
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    println!(
        "model: schema v{}, {}",
        report["version"],
        text(&report["description"])
    );
    println!(
        "file: {} bytes, constants {} bytes",
        report["file_bytes"], report["constant_bytes"]
    );
    match (&report["arena_bytes"], &report["runtime_error"]) {
        (Value::Number(n), _) => println!("arena: {n} bytes (kiln-runtime plan)"),
        (_, e) => println!(
            "arena: n/a — kiln-runtime cannot run this model: {}",
            text(e)
        ),
    }
    for signature in report["signatures"].as_array().into_iter().flatten() {
        println!(
            "signature '{}': inputs {} outputs {}",
            text(&signature["key"]),
            signature["inputs"],
            signature["outputs"]
        );
    }
    if let Some(metadata) = report["metadata"].as_array().filter(|m| !m.is_empty()) {
        println!(
            "metadata: {}",
            metadata.iter().map(text).collect::<Vec<_>>().join(", ")
        );
    }
    let info = &report["model_metadata"];
    if let Some(version) = info["min_runtime_version"].as_str() {
        println!("min runtime version: {version}");
    }
    let card = &info["metadata"];
    if !card.is_null() {
        println!(
            "model metadata: {} — {} (version {}, by {})",
            text(&card["name"]),
            text(&card["description"]),
            text(&card["version"]),
            text(&card["author"])
        );
        for input in card["inputs"].as_array().into_iter().flatten() {
            println!(
                "  input '{}': image {}, normalisation {} (applied to 0–255 pixels)",
                text(&input["name"]),
                input["image"],
                input["normalization"]
            );
        }
    }
    if let Some(labels) = info["labels"].as_array() {
        println!(
            "labels ({}): {}",
            labels.len(),
            labels.iter().map(text).collect::<Vec<_>>().join(", ")
        );
    }
    for (i, subgraph) in report["subgraphs"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        println!(
            "\nsubgraph {i}: inputs {} outputs {}",
            subgraph["inputs"], subgraph["outputs"]
        );
        println!(
            "  {:>4}  {:<24} {:>3}  inputs -> outputs",
            "#", "operator", "ver"
        );
        for op in subgraph["operators"].as_array().into_iter().flatten() {
            println!(
                "  {:>4}  {:<24} {:>3}  {} -> {}",
                op["index"],
                text(&op["op"]),
                op["version"],
                op["inputs"],
                op["outputs"]
            );
        }
        println!(
            "  {:>4}  {:<32} {:<8} {:<18} {:>10}  kind   quantization",
            "#", "tensor", "type", "shape", "bytes"
        );
        for t in subgraph["tensors"].as_array().into_iter().flatten() {
            let quantization = match &t["quantization"] {
                Value::Null => String::new(),
                q => {
                    let scales = q["scale"].as_array().map_or(0, Vec::len);
                    if scales == 1 {
                        format!("scale {} zero_point {}", q["scale"][0], q["zero_point"][0])
                    } else {
                        format!(
                            "{scales} per-channel scales (axis {})",
                            q["quantized_dimension"]
                        )
                    }
                }
            };
            let kind = if t["constant"].as_bool() == Some(true) {
                "const"
            } else {
                "arena"
            };
            println!(
                "  {:>4}  {:<32} {:<8} {:<18} {:>10}  {kind:<6} {quantization}",
                t["index"],
                text(&t["name"]),
                text(&t["type"]),
                t["shape"].to_string(),
                t["bytes"]
            );
        }
    }
}
