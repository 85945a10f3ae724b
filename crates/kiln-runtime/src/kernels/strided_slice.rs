//! STRIDED_SLICE: `input[begin:end:stride]` per dimension, with TFLite's masks — begin/end
//! masks (ignore the index, take the whole range in the stride's direction), an ellipsis (the
//! dimensions the spec does not name), new axes (insert a dimension of 1) and shrink axes
//! (take one element, drop the dimension) — negative indices and strides, clamping of
//! out-of-range indices, and the `offset` option (`end` is a size relative to `begin`).
//! Begin, end and strides are constant INT32 vectors. Any element type.
//!
//! Slices TFLite itself mishandles (a shrink axis that selects nothing, an ellipsis that
//! covers no dimension, offset slices whose declared size disagrees with what TFLite's loop
//! reads) are rejected rather than imitated.

use kiln_tflite::{BuiltinOptions, StridedSliceOptions, TensorType};

use super::common::layout::{
    ANY_FIXED_SIZE, Gather, element_size, fold_known_output, known_i32s, require_same_type, strides,
};
use super::{Kernel, Prep};
use crate::error::RuntimeError;

/// TFLite's limit on the number of begin/end/stride entries.
const MAX_SPEC: usize = 31;

/// One dimension of the input after new axes are inserted, with its slice spec.
#[derive(Clone, Debug, PartialEq)]
struct Axis {
    size: i64,
    /// Element stride of this dimension in the input (0 for an inserted axis).
    input_stride: i64,
    begin: i64,
    end: i64,
    stride: i64,
    begin_masked: bool,
    end_masked: bool,
    shrink: bool,
}

impl Axis {
    /// A dimension the spec does not constrain: its whole range.
    fn full(size: usize, input_stride: usize) -> Self {
        Self {
            size: size as i64,
            input_stride: input_stride as i64,
            begin: 0,
            end: 0,
            stride: 1,
            begin_masked: true,
            end_masked: true,
            shrink: false,
        }
    }

    /// The first index read (TFLite's StartForAxis): in [0, size] going forward, [-1, size-1]
    /// going backward.
    fn start(&self) -> i64 {
        if self.begin_masked {
            return if self.stride > 0 { 0 } else { self.size - 1 };
        }
        let begin = if self.begin < 0 {
            self.begin + self.size
        } else {
            self.begin
        };
        self.clamp(begin)
    }

    /// One past the last index read (TFLite's EndForAxis).
    fn stop(&self, start: i64, offset: bool) -> i64 {
        if self.shrink {
            return if start >= self.size { start } else { start + 1 };
        }
        if self.end_masked {
            return if self.stride > 0 { self.size } else { -1 };
        }
        let mut end = self.end;
        if offset {
            end += start;
        }
        if end < 0 {
            end += self.size;
        }
        self.clamp(end)
    }

    fn clamp(&self, index: i64) -> i64 {
        let (low, high) = if self.stride > 0 {
            (0, self.size)
        } else {
            (-1, self.size - 1)
        };
        index.max(low).min(high)
    }

    /// How many indices the loop `i = start; i < stop (or > stop); i += stride` visits.
    fn count(&self, start: i64, stop: i64) -> i64 {
        let (distance, step) = if self.stride > 0 {
            (stop - start, self.stride)
        } else {
            (start - stop, -self.stride)
        };
        if distance <= 0 {
            0
        } else {
            (distance + step - 1) / step
        }
    }
}

/// The output extent TFLite declares for a non-shrunk axis (ResizeOutputTensor).
fn declared_extent(distance: i64, stride: i64) -> i64 {
    if (distance < 0) != (stride < 0) {
        0
    } else if stride < 0 {
        (distance + 1) / stride + 1
    } else if distance == 0 {
        0
    } else {
        (distance - 1) / stride + 1
    }
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(4..=4, 1)?;
    let (input, output) = (prep.input(0)?, prep.output(0)?);
    require_same_type(prep, input, output)?;
    let elem = element_size(prep, input, ANY_FIXED_SIZE)?;
    let options = match &prep.op.options {
        BuiltinOptions::StridedSlice(o) => o.clone(),
        BuiltinOptions::None => StridedSliceOptions::default(),
        _ => return Err(prep.bad("expected StridedSliceOptions")),
    };
    let mut spec = Vec::with_capacity(3);
    for (i, what) in [(1, "begin"), (2, "end"), (3, "strides")] {
        let info = prep.input(i)?;
        // TFLite reads these as int32 whatever their declared type.
        prep.require_type(info, &[TensorType::Int32])?;
        prep.require_rank(info, 1)?;
        spec.push(known_i32s(prep, i, what)?);
    }
    let (begin, end, stride_values) = (&spec[0], &spec[1], &spec[2]);
    if begin.len() != end.len() || begin.len() != stride_values.len() {
        return Err(prep.bad(&format!(
            "begin, end and strides have {}, {} and {} entries; they must match",
            begin.len(),
            end.len(),
            stride_values.len()
        )));
    }
    if begin.len() > MAX_SPEC {
        return Err(prep.bad(&format!(
            "{} slice entries; TFLite supports up to {MAX_SPEC}",
            begin.len()
        )));
    }
    let axes = effective_axes(prep, &input.shape, begin, end, stride_values, &options)?;

    let mut shape = Vec::with_capacity(axes.len());
    let mut dims = Vec::with_capacity(axes.len());
    let mut first = 0i64;
    for (idx, axis) in axes.iter().enumerate() {
        let start = axis.start();
        let stop = axis.stop(start, options.offset);
        let count = axis.count(start, stop);
        if axis.shrink {
            if count != 1 {
                return Err(prep.unsupported(&format!(
                    "shrink axis {idx} selects no element (index out of range or a negative \
                     stride); TFLite leaves such an output unwritten"
                )));
            }
        } else {
            let distance = if options.offset {
                // TFLite sizes offset slices from `end` at the expanded index.
                match end.get(idx) {
                    Some(&e) => i64::from(e),
                    None => {
                        return Err(prep.unsupported(
                            "an offset slice with inserted or ellipsis axes (TFLite reads past \
                             the end of its size vector)",
                        ));
                    }
                }
            } else {
                stop - start
            };
            if declared_extent(distance, axis.stride) != count {
                return Err(prep.unsupported(&format!(
                    "axis {idx}: TFLite declares {} elements but its loop reads {count} \
                     (an offset slice running past the input)",
                    declared_extent(distance, axis.stride)
                )));
            }
            shape.push(count as usize);
        }
        if count > 0 {
            first += start * axis.input_stride;
        }
        dims.push((count as usize, (axis.stride * axis.input_stride) as isize));
    }
    let first = if dims.iter().any(|&(count, _)| count == 0) {
        0
    } else {
        usize::try_from(first).map_err(|_| prep.bad("slice starts before the input"))?
    };
    let gather = Gather::new(elem, first, &dims, input.num_elements())
        .ok_or_else(|| prep.bad("slice reads outside the input"))?;
    fold_known_output(prep, &gather, &shape);
    prep.set_output_shape(0, shape);
    Ok(Box::new(gather))
}

/// Expands the spec against the input: the ellipsis becomes the dimensions no other entry
/// names, new axes become dimensions of 1, and dimensions past the spec are taken whole —
/// TFLite's BuildStridedSliceParams, restricted to specs where every entry is used.
fn effective_axes(
    prep: &Prep<'_>,
    shape: &[usize],
    begin: &[i32],
    end: &[i32],
    stride_values: &[i32],
    options: &StridedSliceOptions,
) -> Result<Vec<Axis>, RuntimeError> {
    let n = begin.len();
    let rank = shape.len();
    let bit = |mask: i32, j: usize| (mask as u32) >> j & 1 == 1;
    let beyond = |mask: i32| (mask as u32).checked_shr(n as u32).unwrap_or(0) != 0;
    if (options.ellipsis_mask as u32).count_ones() > 1 {
        return Err(prep.bad("more than one ellipsis in the slice"));
    }
    if beyond(options.ellipsis_mask) || beyond(options.new_axis_mask) {
        return Err(prep.bad(&format!(
            "ellipsis or new-axis mask bits beyond the {n} slice entries"
        )));
    }
    let ellipsis = (0..n).find(|&j| bit(options.ellipsis_mask, j));
    let new_axes = (0..n)
        .filter(|&j| bit(options.new_axis_mask, j) && Some(j) != ellipsis)
        .count();
    // Input dimensions named by an entry (neither the ellipsis nor a new axis).
    let named = n - new_axes - usize::from(ellipsis.is_some());
    let covered_by_ellipsis = match ellipsis {
        Some(_) if named >= rank => {
            return Err(prep.unsupported(&format!(
                "the ellipsis covers no dimension of the rank-{rank} input (TFLite then drops \
                 the last slice entry)"
            )));
        }
        Some(_) => rank - named,
        None if named > rank => {
            return Err(prep.bad(&format!("{named} slice entries for a rank-{rank} input")));
        }
        None => 0,
    };
    let in_strides = strides(shape);
    let mut axes = Vec::with_capacity(rank + new_axes);
    let mut next = 0usize;
    for j in 0..n {
        if Some(j) == ellipsis {
            for _ in 0..covered_by_ellipsis {
                axes.push(Axis::full(shape[next], in_strides[next]));
                next += 1;
            }
        } else if bit(options.new_axis_mask, j) {
            axes.push(Axis {
                size: 1,
                input_stride: 0,
                begin: 0,
                end: 1,
                stride: 1,
                begin_masked: false,
                end_masked: false,
                shrink: false,
            });
        } else {
            let stride = i64::from(stride_values[j]);
            if stride == 0 || stride == i64::from(i32::MIN) {
                return Err(prep.bad(&format!("stride {stride} at slice entry {j}")));
            }
            axes.push(Axis {
                size: shape[next] as i64,
                input_stride: in_strides[next] as i64,
                begin: i64::from(begin[j]),
                end: i64::from(end[j]),
                stride,
                begin_masked: bit(options.begin_mask, j),
                end_masked: bit(options.end_mask, j),
                shrink: bit(options.shrink_axis_mask, j),
            });
            next += 1;
        }
    }
    while next < rank {
        axes.push(Axis::full(shape[next], in_strides[next]));
        next += 1;
    }
    Ok(axes)
}

#[cfg(test)]
mod tests {
    use kiln_tflite::{BuiltinOptions, StridedSliceOptions, TensorType};

    use super::super::common::testing::{Run, constant, i32s, run, tensor};
    use super::prepare;
    use crate::error::RuntimeError;

    /// Slices a UINT8 tensor holding 0, 1, 2, ... of `shape`.
    fn slice(
        shape: &[usize],
        begin: &[i32],
        end: &[i32],
        strides: &[i32],
        options: StridedSliceOptions,
    ) -> Result<Run, RuntimeError> {
        let data: Vec<u8> = (0..shape.iter().product::<usize>())
            .map(|v| v as u8)
            .collect();
        run(
            prepare,
            BuiltinOptions::StridedSlice(options),
            vec![
                Some(tensor(TensorType::UInt8, shape)),
                Some(i32s(begin)),
                Some(i32s(end)),
                Some(i32s(strides)),
            ],
            tensor(TensorType::UInt8, &[]),
            &[&data],
        )
    }

    fn masks(
        begin: i32,
        end: i32,
        ellipsis: i32,
        new_axis: i32,
        shrink: i32,
    ) -> StridedSliceOptions {
        StridedSliceOptions {
            begin_mask: begin,
            end_mask: end,
            ellipsis_mask: ellipsis,
            new_axis_mask: new_axis,
            shrink_axis_mask: shrink,
            offset: false,
        }
    }

    fn ok(r: Result<Run, RuntimeError>) -> (Vec<usize>, Vec<u8>) {
        let r = r.expect("prepares");
        (r.shape, r.data)
    }

    #[test]
    fn negative_indices_and_strides() {
        // x[1:3, -1:0:-1] of a [3, 4] matrix.
        let r = slice(&[3, 4], &[1, -1], &[3, 0], &[1, -1], masks(0, 0, 0, 0, 0));
        assert_eq!(ok(r), (vec![2, 3], vec![7, 6, 5, 11, 10, 9]));
        // x[::-1, ::2] through masks (the indices are ignored).
        let r = slice(&[3, 4], &[5, 9], &[0, 9], &[-1, 2], masks(3, 3, 0, 0, 0));
        assert_eq!(ok(r), (vec![3, 2], vec![8, 10, 4, 6, 0, 2]));
        // Out-of-range indices clamp: x[-10:10] is everything, x[10:-10:-1] everything reversed.
        assert_eq!(
            ok(slice(&[4], &[-10], &[10], &[1], masks(0, 0, 0, 0, 0))).1,
            [0, 1, 2, 3]
        );
        assert_eq!(
            ok(slice(&[4], &[10], &[-10], &[-1], masks(0, 0, 0, 0, 0))).1,
            [3, 2, 1, 0]
        );
        // Empty ranges give empty outputs.
        assert_eq!(
            ok(slice(&[4], &[3], &[1], &[1], masks(0, 0, 0, 0, 0))).0,
            [0]
        );
        // Strides that do not divide the range round up.
        assert_eq!(
            ok(slice(&[7], &[0], &[7], &[3], masks(0, 0, 0, 0, 0))).1,
            [0, 3, 6]
        );
        assert_eq!(
            ok(slice(&[7], &[6], &[0], &[-4], masks(0, 0, 0, 0, 0))).1,
            [6, 2]
        );
    }

    #[test]
    fn shrink_axes() {
        // x[1] and x[-1] of a [3, 4] matrix; dimensions past the spec are taken whole.
        assert_eq!(
            ok(slice(&[3, 4], &[1], &[2], &[1], masks(0, 0, 0, 0, 1))),
            (vec![4], vec![4, 5, 6, 7])
        );
        assert_eq!(
            ok(slice(&[3, 4], &[-1], &[0], &[1], masks(0, 0, 0, 0, 1))).1,
            [8, 9, 10, 11]
        );
        // x[:, 2]: the end index is irrelevant when shrinking.
        let r = slice(&[3, 4], &[0, 2], &[0, -7], &[1, 1], masks(1, 1, 0, 0, 2));
        assert_eq!(ok(r), (vec![3], vec![2, 6, 10]));
        // Both axes: a scalar.
        assert_eq!(
            ok(slice(
                &[3, 4],
                &[2, 3],
                &[0, 0],
                &[1, 1],
                masks(0, 0, 0, 0, 3)
            )),
            (vec![], vec![11])
        );
        // An index past the end selects nothing in TFLite: refused.
        assert!(slice(&[3, 4], &[3], &[4], &[1], masks(0, 0, 0, 0, 1)).is_err());
        // A negative stride on a shrink axis makes TFLite write nothing: refused.
        assert!(slice(&[3, 4], &[1], &[0], &[-1], masks(0, 0, 0, 0, 1)).is_err());
    }

    #[test]
    fn ellipsis_and_new_axes() {
        // x[..., tf.newaxis, 1] of a [2, 3, 4] tensor: shape [2, 3, 1], x[:, :, 1].
        let r = slice(
            &[2, 3, 4],
            &[0, 0, 1],
            &[0, 0, 2],
            &[1, 1, 1],
            masks(0, 0, 1, 2, 4),
        );
        assert_eq!(ok(r), (vec![2, 3, 1], vec![1, 5, 9, 13, 17, 21]));
        // x[tf.newaxis, :, 0] of a [3, 4] matrix: shape [1, 3].
        let r = slice(
            &[3, 4],
            &[0, 0, 0],
            &[0, 0, 1],
            &[1, 1, 1],
            masks(2, 2, 0, 1, 4),
        );
        assert_eq!(ok(r), (vec![1, 3], vec![0, 4, 8]));
        // x[1, ...] of a [2, 2, 2] tensor: the ellipsis covers two dimensions.
        let r = slice(&[2, 2, 2], &[1, 0], &[2, 0], &[1, 1], masks(0, 0, 2, 0, 1));
        assert_eq!(ok(r), (vec![2, 2], vec![4, 5, 6, 7]));
        // x[..., ::-1] reverses the last dimension only.
        let r = slice(&[2, 3], &[0, 0], &[0, 0], &[1, -1], masks(2, 2, 1, 0, 0));
        assert_eq!(ok(r), (vec![2, 3], vec![2, 1, 0, 5, 4, 3]));
        // An ellipsis that would cover no dimension, and two ellipses, are refused.
        assert!(slice(&[3], &[0, 0], &[0, 1], &[1, 1], masks(0, 0, 1, 0, 2)).is_err());
        assert!(slice(&[3, 4], &[0, 0], &[0, 0], &[1, 1], masks(0, 0, 3, 0, 0)).is_err());
    }

    #[test]
    fn offset_takes_end_as_size() {
        let mut options = masks(0, 0, 0, 0, 0);
        options.offset = true;
        let r = slice(&[3, 4], &[1, 1], &[2, 2], &[1, 1], options.clone());
        assert_eq!(ok(r), (vec![2, 2], vec![5, 6, 9, 10]));
        // Negative begin counts from the end; the size is relative to it.
        assert_eq!(
            ok(slice(&[4], &[-3], &[2], &[1], options.clone())).1,
            [1, 2]
        );
        // A size running past the input: TFLite declares 3 but reads 2 — refused.
        assert!(slice(&[4], &[2], &[3], &[1], options).is_err());
    }

    #[test]
    fn malformed_specs_are_errors() {
        assert!(slice(&[4], &[0], &[4], &[0], masks(0, 0, 0, 0, 0)).is_err()); // zero stride
        assert!(slice(&[4], &[0, 0], &[4], &[1], masks(0, 0, 0, 0, 0)).is_err()); // lengths differ
        assert!(slice(&[4], &[0, 0], &[4, 1], &[1, 1], masks(0, 0, 0, 0, 0)).is_err()); // too many
        assert!(slice(&[4], &[0], &[4], &[1], masks(0, 0, 0, 2, 0)).is_err()); // bit past spec
    }

    #[test]
    fn wide_elements_and_folding() {
        // INT64 elements, and an INT32 result known at prepare time (shape arithmetic).
        let longs: Vec<u8> = (0..4i64).flat_map(|v| (v * 1000).to_le_bytes()).collect();
        let r = run(
            prepare,
            BuiltinOptions::StridedSlice(masks(0, 0, 0, 0, 0)),
            vec![
                Some(constant(TensorType::Int64, &[4], longs)),
                Some(i32s(&[3])),
                Some(i32s(&[0])),
                Some(i32s(&[-2])),
            ],
            tensor(TensorType::Int64, &[]),
            &[],
        )
        .expect("prepares");
        let expected: Vec<u8> = [3000i64, 1000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(r.data, expected);
        assert_eq!(r.folded, Some(expected), "INT64 results fold too");
        let r = run(
            prepare,
            BuiltinOptions::StridedSlice(masks(0, 0, 0, 0, 1)),
            vec![
                Some(i32s(&[1, 8, 8, 3])),
                Some(i32s(&[1])),
                Some(i32s(&[2])),
                Some(i32s(&[1])),
            ],
            tensor(TensorType::Int32, &[]),
            &[],
        )
        .expect("prepares");
        assert_eq!(r.shape, Vec::<usize>::new());
        assert_eq!(r.folded, Some(8i32.to_le_bytes().to_vec()));
    }
}

/// A literal transcription of TFLite's algorithm (BuildStridedSliceParams' walk over expanded
/// indices, ResizeOutputTensor, the recursive reference loop) checks the kernel on random
/// specs: wherever the kernel accepts a spec, both must agree on shape and elements.
#[cfg(test)]
mod cross_check {
    use kiln_tflite::{BuiltinOptions, StridedSliceOptions, TensorType};

    use super::super::common::testing::{i32s, run, tensor};
    use super::prepare;

    struct Params {
        start: Vec<i64>,
        stop: Vec<i64>,
        stride: Vec<i64>,
        begin_mask: u64,
        end_mask: u64,
        shrink: u64,
        shape: Vec<i64>,
    }

    /// (output shape, input element read for each output element), or `None` where TFLite's
    /// behaviour is undefined (reads out of bounds) or its declared shape disagrees with the
    /// elements it writes.
    fn tflite(
        shape: &[usize],
        begin: &[i32],
        end: &[i32],
        strides: &[i32],
        o: &StridedSliceOptions,
    ) -> Option<(Vec<usize>, Vec<usize>)> {
        let bit = |m: i32, i: i64| (0..32).contains(&i) && (m as u32) >> i & 1 == 1;
        let n = begin.len() as i64;
        let rank = shape.len() as i64;
        let num_add = (0..n)
            .filter(|&i| !bit(o.ellipsis_mask, i) && bit(o.new_axis_mask, i))
            .count() as i64;
        let eff = rank + num_add;
        let (mut eff_ellipsis, mut eff_new) = (0u64, 0u64);
        let (mut ellipsis_start, mut expanded) = (eff, 0);
        let mut i = 0;
        while i < eff {
            if bit(o.ellipsis_mask, i) {
                ellipsis_start = i;
                let ellipsis_end = (i + 1).max((i + 1 + num_add + rank - n).min(eff));
                expanded = ellipsis_end - ellipsis_start - 1;
                while i < ellipsis_end {
                    eff_ellipsis |= 1 << i;
                    i += 1;
                }
                continue;
            }
            if bit(o.new_axis_mask, i - expanded) {
                eff_new |= 1 << i;
            }
            i += 1;
        }
        let mut p = Params {
            start: vec![0; eff as usize],
            stop: vec![0; eff as usize],
            stride: vec![1; eff as usize],
            begin_mask: 0,
            end_mask: 0,
            shrink: 0,
            shape: vec![0; eff as usize],
        };
        let (mut added_ellipsis, mut added_axes) = (0i64, 0i64);
        let dim = |j: i64| shape.get(usize::try_from(j).ok()?).map(|&d| d as i64);
        for i in 0..eff {
            let u = i as usize;
            if eff_ellipsis >> i & 1 == 1 {
                added_ellipsis = (i - ellipsis_start).max(0);
                p.begin_mask |= 1 << i;
                p.end_mask |= 1 << i;
                p.shape[u] = dim(i - added_axes)?;
            } else if eff_new >> i & 1 == 1 {
                p.stop[u] = 1;
                p.shape[u] = 1;
                added_axes += 1;
            } else if i >= n + expanded {
                p.begin_mask |= 1 << i;
                p.end_mask |= 1 << i;
                p.shape[u] = dim(i - added_axes)?;
            } else {
                let orig = (i - added_ellipsis) as usize;
                p.start[u] = i64::from(begin[orig]);
                p.stop[u] = i64::from(end[orig]);
                p.stride[u] = i64::from(strides[orig]);
                for (mask, out) in [
                    (o.begin_mask, &mut p.begin_mask),
                    (o.end_mask, &mut p.end_mask),
                    (o.shrink_axis_mask, &mut p.shrink),
                ] {
                    if bit(mask, orig as i64) {
                        *out |= 1 << i;
                    }
                }
                p.shape[u] = dim(i - added_axes)?;
            }
        }
        let clamp = |v: i64, stride: i64, size: i64| {
            if stride > 0 {
                v.clamp(0, size)
            } else {
                v.clamp(-1, size - 1)
            }
        };
        let mut starts = vec![0; eff as usize];
        let mut stops = vec![0; eff as usize];
        let mut out_shape = Vec::new();
        for a in 0..eff as usize {
            let (size, stride) = (p.shape[a], p.stride[a]);
            if stride == 0 {
                return None;
            }
            let mut s = p.start[a];
            if s < 0 {
                s += size;
            }
            s = clamp(s, stride, size);
            if p.begin_mask >> a & 1 == 1 {
                s = if stride > 0 { 0 } else { size - 1 };
            }
            let e = if p.shrink >> a & 1 == 1 {
                if s >= size { s } else { s + 1 }
            } else {
                let mut e = p.stop[a];
                if o.offset {
                    e += s;
                }
                if e < 0 {
                    e += size;
                }
                e = clamp(e, stride, size);
                if p.end_mask >> a & 1 == 1 {
                    e = if stride > 0 { size } else { -1 };
                }
                e
            };
            starts[a] = s;
            stops[a] = e;
            if p.shrink >> a & 1 == 0 {
                let d = if o.offset {
                    i64::from(*end.get(a)?)
                } else {
                    e - s
                };
                let d = if (d < 0) != (stride < 0) {
                    0
                } else if stride < 0 {
                    (d + 1) / stride + 1
                } else if d == 0 {
                    0
                } else {
                    (d - 1) / stride + 1
                };
                out_shape.push(d as usize);
            }
        }
        let mut in_strides = vec![1i64; eff as usize];
        for a in (0..(eff as usize).saturating_sub(1)).rev() {
            in_strides[a] = in_strides[a + 1] * p.shape[a + 1];
        }
        let mut reads = Vec::new();
        fn walk(
            a: usize,
            at: i64,
            p: &Params,
            starts: &[i64],
            stops: &[i64],
            in_strides: &[i64],
            reads: &mut Vec<usize>,
        ) {
            if a == starts.len() {
                reads.push(at as usize);
                return;
            }
            let mut i = starts[a];
            while if p.stride[a] > 0 {
                i < stops[a]
            } else {
                i > stops[a]
            } {
                walk(
                    a + 1,
                    at + i * in_strides[a],
                    p,
                    starts,
                    stops,
                    in_strides,
                    reads,
                );
                i += p.stride[a];
            }
        }
        walk(0, 0, &p, &starts, &stops, &in_strides, &mut reads);
        let elements = shape.iter().product::<usize>();
        if reads.len() != out_shape.iter().product::<usize>()
            || reads.iter().any(|&r| r >= elements)
        {
            return None;
        }
        Some((out_shape, reads))
    }

    #[test]
    fn agrees_with_tflite_on_random_specs() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let (mut accepted, mut tried) = (0, 0);
        while tried < 20_000 {
            tried += 1;
            let rank = next(4) as usize;
            let shape: Vec<usize> = (0..rank).map(|_| next(4) as usize).collect();
            let n = next(5) as usize;
            let index = |next: &mut dyn FnMut(u64) -> u64| next(11) as i32 - 5;
            let begin: Vec<i32> = (0..n).map(|_| index(&mut next)).collect();
            let end: Vec<i32> = (0..n).map(|_| index(&mut next)).collect();
            let strides: Vec<i32> = (0..n)
                .map(|_| [1, 1, 2, -1, -2, 3][next(6) as usize])
                .collect();
            let mask = |next: &mut dyn FnMut(u64) -> u64, density: u64| -> i32 {
                (0..n).filter(|_| next(density) == 0).map(|j| 1 << j).sum()
            };
            let ellipsis = if n > 0 && next(3) == 0 {
                1 << next(n as u64)
            } else {
                0
            };
            let options = StridedSliceOptions {
                begin_mask: mask(&mut next, 3),
                end_mask: mask(&mut next, 3),
                ellipsis_mask: ellipsis,
                new_axis_mask: mask(&mut next, 5),
                shrink_axis_mask: mask(&mut next, 4),
                offset: next(8) == 0,
            };
            let data: Vec<u8> = (0..shape.iter().product::<usize>())
                .map(|v| v as u8)
                .collect();
            let ours = run(
                prepare,
                BuiltinOptions::StridedSlice(options.clone()),
                vec![
                    Some(tensor(TensorType::UInt8, &shape)),
                    Some(i32s(&begin)),
                    Some(i32s(&end)),
                    Some(i32s(&strides)),
                ],
                tensor(TensorType::UInt8, &[]),
                &[&data],
            );
            // Refusals are checked by the tests above; TFLite silently drops spec entries
            // the kernel refuses (an ellipsis covering nothing, more entries than dimensions).
            let Ok(ours) = ours else { continue };
            accepted += 1;
            let context = format!("{shape:?} {begin:?} {end:?} {strides:?} {options:?}");
            let (shape, reads) = tflite(&shape, &begin, &end, &strides, &options)
                .unwrap_or_else(|| panic!("kiln accepts what TFLite mishandles: {context}"));
            assert_eq!(ours.shape, shape, "{context}");
            let reads: Vec<u8> = reads.iter().map(|&r| r as u8).collect();
            assert_eq!(ours.data, reads, "{context}");
        }
        assert!(
            accepted > 5_000,
            "only {accepted} of {tried} specs accepted"
        );
    }
}
