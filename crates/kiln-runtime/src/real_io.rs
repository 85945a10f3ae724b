//! Real-valued I/O for a model of any I/O type: float32 passes through, int8/uint8 inputs are
//! quantized with the input tensor's scale and zero point (as TFLite's QUANTIZE kernel rounds:
//! half away from zero, saturating) and int8/uint8 outputs dequantized — so a caller feeds
//! every variant of a model the same pixels and reads comparable logits.

use kiln_tflite::TensorType;

use crate::{Interpreter, RuntimeError, TensorInfo};

type Result<T> = std::result::Result<T, RuntimeError>;

fn not_real(info: &TensorInfo, reason: String) -> RuntimeError {
    RuntimeError::NotRealValued {
        tensor: info.name.clone(),
        reason,
    }
}

/// The per-tensor (scale, zero point) of a quantized I/O tensor.
fn affine(info: &TensorInfo) -> Result<(f32, i32)> {
    let q = info
        .quantization
        .as_ref()
        .filter(|q| q.scale.len() == 1)
        .ok_or_else(|| {
            not_real(
                info,
                format!("{} tensor has no per-tensor scale", info.dtype),
            )
        })?;
    let zero_point = q.zero_point.first().copied().unwrap_or(0);
    let zero_point = i32::try_from(zero_point)
        .map_err(|_| not_real(info, format!("zero point {zero_point} is out of range")))?;
    Ok((q.scale[0], zero_point))
}

/// The bytes to feed input `info` for the real `values`.
pub fn encode_input(info: &TensorInfo, values: &[f32]) -> Result<Vec<u8>> {
    let range = match info.dtype {
        TensorType::Float32 => return Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        TensorType::Int8 => (-128.0, 127.0),
        TensorType::UInt8 => (0.0, 255.0),
        other => {
            return Err(not_real(
                info,
                format!("input is {other}; real values feed float32, int8 or uint8"),
            ));
        }
    };
    let (scale, zero_point) = affine(info)?;
    Ok(values
        .iter()
        .map(|&v| {
            let q = f64::from((v / scale).round()) + f64::from(zero_point);
            q.clamp(range.0, range.1) as i32 as u8
        })
        .collect())
}

/// Output `bytes` of tensor `info` as real values.
pub fn decode_output(info: &TensorInfo, bytes: &[u8]) -> Result<Vec<f32>> {
    let widen: fn(u8) -> f32 = match info.dtype {
        TensorType::Float32 => {
            return Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect());
        }
        TensorType::Int8 => |b| f32::from(b as i8),
        TensorType::UInt8 => f32::from,
        other => {
            return Err(not_real(
                info,
                format!("output is {other}; real values come from float32, int8 or uint8"),
            ));
        }
    };
    let (scale, zero_point) = affine(info)?;
    Ok(bytes
        .iter()
        .map(|&b| scale * (widen(b) - zero_point as f32))
        .collect())
}

/// Sets input `i` from real values.
pub fn set_input(interpreter: &mut Interpreter, i: usize, values: &[f32]) -> Result<()> {
    let bytes = encode_input(interpreter.input_info(i)?, values)?;
    interpreter.set_input(i, &bytes)
}

/// Output `i` as real values.
pub fn output(interpreter: &Interpreter, i: usize) -> Result<Vec<f32>> {
    decode_output(interpreter.output_info(i)?, interpreter.output(i)?)
}

#[cfg(test)]
mod tests {
    use kiln_tflite::Quantization;

    use super::*;

    fn info(dtype: TensorType, scale: f32, zero_point: i64) -> TensorInfo {
        TensorInfo {
            name: "x".into(),
            shape: vec![4],
            dtype,
            quantization: Some(Quantization {
                scale: vec![scale],
                zero_point: vec![zero_point],
                ..Default::default()
            }),
            sparse: false,
            sparsity: None,
        }
    }

    #[test]
    fn int8_and_uint8_round_trip_on_the_grid() {
        let int8 = info(TensorType::Int8, 0.5, -10);
        let bytes = encode_input(&int8, &[0.25, -0.25, 1000.0, -1000.0]).unwrap();
        assert_eq!(bytes, [(-9i8) as u8, (-11i8) as u8, 127, 128]);
        assert_eq!(
            decode_output(&int8, &bytes).unwrap(),
            [0.5, -0.5, 68.5, -59.0]
        );
        let uint8 = info(TensorType::UInt8, 0.5, 118);
        let bytes = encode_input(&uint8, &[0.25, -0.25, 1000.0, -1000.0]).unwrap();
        assert_eq!(bytes, [119, 117, 255, 0]);
        assert_eq!(
            decode_output(&uint8, &[118, 120, 0, 255]).unwrap(),
            [0.0, 1.0, -59.0, 68.5]
        );
    }

    #[test]
    fn float_passes_through_and_other_types_are_named() {
        let float = TensorInfo {
            quantization: None,
            ..info(TensorType::Float32, 1.0, 0)
        };
        let bytes = encode_input(&float, &[1.5, -2.0]).unwrap();
        assert_eq!(decode_output(&float, &bytes).unwrap(), [1.5, -2.0]);
        let int16 = info(TensorType::Int16, 1.0, 0);
        let message = encode_input(&int16, &[1.0]).unwrap_err().to_string();
        assert!(message.contains("INT16"), "{message}");
    }
}
