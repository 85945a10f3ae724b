//! The inner product every float kernel spends its time in, written so the compiler
//! vectorises it (eight independent accumulators break the add dependency chain).

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let mut chunks_a = a.chunks_exact(8);
    let mut chunks_b = b.chunks_exact(8);
    for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_naive_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 / (i as f32 + 1.0)).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((super::dot(&a, &b) - naive).abs() < 1e-4);
    }
}

/// Σ (w[k] + weight_offset) × x[k] over 8-bit weights (int8 when `signed`, else uint8) and
/// i16 activations (offset 8-bit values), with wrapping arithmetic like TFLite's int32 accumulators. The offset is
/// applied once through Σx so the inner loops stay branch-free and vectorise.
pub fn dot_q8(x: &[i16], weights: &[u8], signed: bool, weight_offset: i32) -> i32 {
    let n = x.len().min(weights.len());
    let (x, weights) = (&x[..n], &weights[..n]);
    let mut acc = [0i32; 8];
    let mut xs = x.chunks_exact(8);
    let mut ws = weights.chunks_exact(8);
    if signed {
        for (cx, cw) in (&mut xs).zip(&mut ws) {
            for k in 0..8 {
                acc[k] = acc[k].wrapping_add(i32::from(cw[k] as i8) * i32::from(cx[k]));
            }
        }
    } else {
        for (cx, cw) in (&mut xs).zip(&mut ws) {
            for k in 0..8 {
                acc[k] = acc[k].wrapping_add(i32::from(cw[k]) * i32::from(cx[k]));
            }
        }
    }
    let mut sum = acc.iter().fold(0i32, |s, &a| s.wrapping_add(a));
    for (&v, &w) in xs.remainder().iter().zip(ws.remainder()) {
        let w = if signed {
            i32::from(w as i8)
        } else {
            i32::from(w)
        };
        sum = sum.wrapping_add(w * i32::from(v));
    }
    if weight_offset != 0 {
        let total = x.iter().fold(0i32, |s, &v| s.wrapping_add(i32::from(v)));
        sum = sum.wrapping_add(weight_offset.wrapping_mul(total));
    }
    sum
}

#[cfg(test)]
mod integer_tests {
    #[test]
    fn i16_dot_matches_naive_sum() {
        let a: Vec<i16> = (0..29).map(|i| i * 13 - 200).collect();
        let b: Vec<i16> = (0..29).map(|i| 255 - i * 17).collect();
        let naive: i32 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum();
        assert_eq!(super::dot_i16(&a, &b), naive);
    }
}

#[cfg(test)]
mod q8_tests {
    #[test]
    fn matches_naive_sum_for_both_signs_and_offsets() {
        let x: Vec<i16> = (0..37).map(|i| i * 7 - 100).collect();
        let w: Vec<u8> = (0..37).map(|i| (i * 53 % 256) as u8).collect();
        for (signed, offset) in [(true, 0), (false, -128), (false, 0), (true, 3)] {
            let naive: i32 = x
                .iter()
                .zip(&w)
                .map(|(&v, &b)| {
                    (if signed {
                        i32::from(b as i8)
                    } else {
                        i32::from(b)
                    } + offset)
                        * i32::from(v)
                })
                .sum();
            assert_eq!(
                super::dot_q8(&x, &w, signed, offset),
                naive,
                "signed {signed} offset {offset}"
            );
        }
    }
}

/// Σ a[k] × b[k] of i16 operands into an i32, wrapping like TFLite's int32 accumulators.
/// Offset 8-bit values fit in i16, and i16 × i16 → i32 sums vectorise even on baseline x86-64
/// (SSE2's pmaddwd), where a packed 32-bit multiply does not exist.
pub fn dot_i16(a: &[i16], b: &[i16]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; 8];
    let mut chunks_a = a.chunks_exact(8);
    let mut chunks_b = b.chunks_exact(8);
    for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(i32::from(ca[k]) * i32::from(cb[k]));
        }
    }
    let mut sum = acc.iter().fold(0i32, |s, &v| s.wrapping_add(v));
    for (&x, &y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        sum = sum.wrapping_add(i32::from(x) * i32::from(y));
    }
    sum
}
