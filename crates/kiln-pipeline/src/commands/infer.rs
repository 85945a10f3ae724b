//! `pipeline infer`: run a `.tflite` on `.npy`/`.npz` inputs with kiln-runtime.

use std::path::Path;

use anyhow::{Context, Result, bail};
use kiln_runtime::Interpreter;

use crate::npy::{NpyArray, npz_bytes, read_npy, read_npz};

fn is_npz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// Names a multi-output `.npz` uses: the signature's names when it has one, else tensor names.
fn output_names(interpreter: &Interpreter) -> Result<Vec<String>> {
    let model = interpreter.model();
    let outputs = &model.subgraphs[0].outputs;
    let signature = model.signature_defs.iter().find(|s| s.subgraph_index == 0);
    (0..interpreter.output_count())
        .map(|i| {
            let by_signature = signature
                .and_then(|s| {
                    s.outputs
                        .iter()
                        .find(|m| i32::try_from(m.tensor_index).ok() == outputs.get(i).copied())
                })
                .map(|m| m.name.clone());
            let name = match by_signature {
                Some(name) => name,
                None => interpreter.output_info(i)?.name.clone(),
            };
            Ok(name.replace(['/', ':', ' '], "_"))
        })
        .collect()
}

pub fn run(model_path: &Path, input_path: &Path, output_path: &Path) -> Result<()> {
    let mut interpreter = crate::model_file::interpreter(model_path)?;
    let inputs: Vec<NpyArray> = if is_npz(input_path) {
        read_npz(input_path)?.into_iter().map(|(_, a)| a).collect()
    } else {
        vec![read_npy(input_path)?]
    };
    if inputs.len() != interpreter.input_count() {
        bail!(
            "{} holds {} array(s) but the model has {} input(s){}",
            input_path.display(),
            inputs.len(),
            interpreter.input_count(),
            if interpreter.input_count() > 1 {
                "; pass an .npz with one array per input, in input order"
            } else {
                ""
            }
        );
    }

    // Either every input matches its tensor exactly (one invoke), or the model has batch 1 and
    // every input carries N rows (N invokes, outputs stacked).
    let mut rows: Option<usize> = None;
    for (i, array) in inputs.iter().enumerate() {
        let info = interpreter.input_info(i)?.clone();
        if array.dtype != info.dtype {
            bail!(
                "input {i} ('{}') must be {} but {} holds {}; convert it, e.g. x.astype(np.{})",
                info.name,
                info.dtype,
                input_path.display(),
                array.dtype,
                numpy_name(info.dtype)
            );
        }
        let n = if array.shape == info.shape {
            1
        } else if info.shape.first() == Some(&1)
            && array.shape.len() == info.shape.len()
            && array.shape[1..] == info.shape[1..]
        {
            array.shape[0]
        } else if let Some(row_shape) = resizable_row(&interpreter, i, &array.shape) {
            // The model declares dynamic dimensions (stored as 1): size them from the data.
            interpreter.resize_input(i, &row_shape)?;
            array.shape[0]
        } else {
            bail!(
                "input {i} ('{}') has shape {:?}; the model expects {:?} (or [N, {}] for N batch-1 runs)",
                info.name,
                array.shape,
                info.shape,
                info.shape[1..]
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        match rows {
            Some(r) if r != n => bail!("inputs disagree on the number of rows ({r} vs {n})"),
            _ => rows = Some(n),
        }
    }
    let rows = rows.unwrap_or(1);

    let mut outputs: Vec<Vec<u8>> = vec![Vec::new(); interpreter.output_count()];
    for row in 0..rows {
        for (i, array) in inputs.iter().enumerate() {
            let size = array.data.len() / rows;
            interpreter.set_input(i, &array.data[row * size..(row + 1) * size])?;
        }
        interpreter.invoke()?;
        for (i, out) in outputs.iter_mut().enumerate() {
            out.extend_from_slice(interpreter.output(i)?);
        }
    }

    let mut arrays = Vec::with_capacity(outputs.len());
    for (i, (data, name)) in outputs
        .into_iter()
        .zip(output_names(&interpreter)?)
        .enumerate()
    {
        let info = interpreter.output_info(i)?;
        // N batch-1 invokes stack along the batch dimension.
        let mut shape = info.shape.clone();
        if rows > 1 {
            match shape.first_mut() {
                Some(batch) => *batch *= rows,
                None => shape.push(rows),
            }
        }
        arrays.push((name, NpyArray::new(info.dtype, shape, data)));
    }
    let bytes = if arrays.len() == 1 && !is_npz(output_path) {
        arrays[0].1.to_bytes()?
    } else {
        if !is_npz(output_path) {
            bail!(
                "the model has {} outputs: name the output file .npz",
                arrays.len()
            );
        }
        npz_bytes(&arrays)?
    };
    kiln_tflite::write_atomically(output_path, &bytes)
        .with_context(|| format!("cannot write {}", output_path.display()))?;
    Ok(())
}

/// The batch-1 shape for rows of `data_shape` ([N, ...]), when input `i`'s shape signature
/// allows it (its dynamic dimensions are -1).
fn resizable_row(interpreter: &Interpreter, i: usize, data_shape: &[usize]) -> Option<Vec<usize>> {
    let subgraph = &interpreter.model().subgraphs[0];
    let tensor = &subgraph.tensors[usize::try_from(*subgraph.inputs.get(i)?).ok()?];
    let signature = tensor.shape_signature.as_ref()?;
    let mut row = data_shape.to_vec();
    *row.first_mut()? = 1;
    let fits = signature.len() == row.len()
        && signature
            .iter()
            .zip(&row)
            .all(|(&s, &d)| s == -1 || s as usize == d)
        && signature.first().is_some_and(|&b| b == 1 || b == -1);
    fits.then_some(row)
}

fn numpy_name(dtype: kiln_tflite::TensorType) -> String {
    use kiln_tflite::TensorType::*;
    match dtype {
        Float32 => "float32".into(),
        Float16 => "float16".into(),
        Int8 => "int8".into(),
        UInt8 => "uint8".into(),
        Int16 => "int16".into(),
        Int32 => "int32".into(),
        Int64 => "int64".into(),
        other => other.name().to_lowercase(),
    }
}
