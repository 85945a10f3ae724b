//! Running a model over NumPy arrays that hold N rows: either every array matches its input
//! exactly (one invoke), or the model has batch 1 and every array carries N rows along axis 0
//! (N invokes, outputs stacked along the batch dimension) — what `pipeline infer` and the
//! conformance tests feed, and how LiteRT's Python users batch a batch-1 model.

use crate::npy::NpyArray;
use crate::{Interpreter, RuntimeError};

fn bad_input(interpreter: &Interpreter, index: usize, reason: String) -> RuntimeError {
    RuntimeError::BadInput {
        index,
        name: interpreter
            .input_info(index)
            .map(|info| info.name.clone())
            .unwrap_or_default(),
        reason,
    }
}

/// Runs `interpreter` on `inputs` (one array per input, in input order) and returns one array
/// per output, named as `output_names` names them.
pub fn invoke_rows(
    interpreter: &mut Interpreter,
    inputs: &[NpyArray],
) -> Result<Vec<(String, NpyArray)>, RuntimeError> {
    if inputs.len() != interpreter.input_count() {
        return Err(RuntimeError::InvalidModel(format!(
            "{} array(s) given for {} input(s){}",
            inputs.len(),
            interpreter.input_count(),
            if interpreter.input_count() > 1 {
                "; give one array per input, in input order"
            } else {
                ""
            }
        )));
    }
    let mut rows: Option<usize> = None;
    for (i, array) in inputs.iter().enumerate() {
        let info = interpreter.input_info(i)?.clone();
        if array.dtype != info.dtype {
            return Err(bad_input(
                interpreter,
                i,
                format!(
                    "must be {} but the array holds {}; convert it, e.g. x.astype(np.{})",
                    info.dtype,
                    array.dtype,
                    numpy_name(info.dtype)
                ),
            ));
        }
        let n = if array.shape == info.shape {
            1
        } else if info.shape.first() == Some(&1)
            && array.shape.len() == info.shape.len()
            && array.shape[1..] == info.shape[1..]
        {
            array.shape[0]
        } else if let Some(row_shape) = resizable_row(interpreter, i, &array.shape) {
            // The model declares dynamic dimensions (stored as 1): size them from the data.
            interpreter.resize_input(i, &row_shape)?;
            array.shape[0]
        } else {
            return Err(bad_input(
                interpreter,
                i,
                format!(
                    "the array has shape {:?}; the model expects {:?} (or [N, {}] for N batch-1 runs)",
                    array.shape,
                    info.shape,
                    info.shape
                        .iter()
                        .skip(1)
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        match rows {
            Some(r) if r != n => {
                return Err(bad_input(
                    interpreter,
                    i,
                    format!("the inputs disagree on the number of rows ({r} vs {n})"),
                ));
            }
            _ => rows = Some(n),
        }
    }
    let rows = rows.unwrap_or(1);

    let mut outputs: Vec<Vec<u8>> = vec![Vec::new(); interpreter.output_count()];
    for row in 0..rows {
        for (i, array) in inputs.iter().enumerate() {
            let size = array.data.len() / rows.max(1);
            interpreter.set_input(i, &array.data[row * size..(row + 1) * size])?;
        }
        interpreter.invoke()?;
        for (i, out) in outputs.iter_mut().enumerate() {
            out.extend_from_slice(interpreter.output(i)?);
        }
    }

    let names = output_names(interpreter)?;
    let mut arrays = Vec::with_capacity(outputs.len());
    for (i, (data, name)) in outputs.into_iter().zip(names).enumerate() {
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
    Ok(arrays)
}

/// Names for the outputs in an `.npz`: the signature's names when the model has one, else
/// the tensor names, with characters NumPy keys avoid replaced.
pub fn output_names(interpreter: &Interpreter) -> Result<Vec<String>, RuntimeError> {
    let model = interpreter.model();
    let outputs = model
        .subgraphs
        .first()
        .map(|g| g.outputs.as_slice())
        .unwrap_or_default();
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

/// The batch-1 shape for rows of `data_shape` ([N, ...]), when input `i`'s shape signature
/// allows it (its dynamic dimensions are -1).
fn resizable_row(interpreter: &Interpreter, i: usize, data_shape: &[usize]) -> Option<Vec<usize>> {
    let subgraph = interpreter.model().subgraphs.first()?;
    let tensor = subgraph
        .tensors
        .get(usize::try_from(*subgraph.inputs.get(i)?).ok()?)?;
    let signature = tensor.shape_signature.as_ref()?;
    let mut row = data_shape.to_vec();
    *row.first_mut()? = 1;
    let fits = signature.len() == row.len()
        && signature
            .iter()
            .zip(&row)
            .all(|(&s, &d)| s == -1 || usize::try_from(s).is_ok_and(|s| s == d))
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
