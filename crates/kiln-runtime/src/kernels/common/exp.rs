//! exp(x) in float32 without branches or library calls, so that element-wise kernels built on
//! it (LOGISTIC, TANH) vectorise: Cody–Waite range reduction x = n·ln2 + r with |r| ≤ ln2/2,
//! a degree-5 minimax polynomial for e^r (XNNPACK's "rr2-p5" coefficients), and 2^n built in
//! the exponent bits. Within 2 ulp of the correctly rounded result on the normal range; below
//! it the result flushes to zero where libm returns a subnormal (< 1.2e-38).

/// e^x; `+∞` above 88.72, 0 below −87.34, NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // 1.5 · 2^23: adding it rounds to an integer in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const C1: f32 = 0.999_999_7;
    const C2: f32 = 0.499_991_5;
    const C3: f32 = 0.166_676_52;
    const C4: f32 = 0.041_897_822;
    const C5: f32 = 0.008_289_291;
    const MAX: f32 = 88.722_83;
    const MIN: f32 = -87.336_55;
    let clamped = x.clamp(MIN, MAX);
    let shifted = clamped * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (C1 + r * (C2 + r * (C3 + r * (C4 + r * C5))));
    // n sits in the low bits of `shifted`; at 88.72 it is 128, one past the largest finite
    // exponent, so the top of the range multiplies by 2^127 twice.
    let n_bits = shifted.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let half = n_bits >> 1;
    let scale_a = f32::from_bits(((half + 127) as u32) << 23);
    let scale_b = f32::from_bits(((n_bits - half + 127) as u32) << 23);
    let value = p * scale_a * scale_b;
    let value = if x > MAX { f32::INFINITY } else { value };
    let value = if x < MIN { 0.0 } else { value };
    if x.is_nan() { x } else { value }
}

#[cfg(test)]
mod tests {
    #[test]
    fn within_two_ulp_of_double_precision_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.7 {
            let got = f64::from(super::exp(x));
            let want = f64::from(x).exp();
            let ulp = f64::from(f32::EPSILON) * want;
            worst = worst.max((got - want).abs() / ulp);
            x += 0.000_731;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(super::exp(0.0), 1.0);
        assert_eq!(super::exp(100.0), f32::INFINITY);
        assert_eq!(super::exp(-100.0), 0.0);
        assert!(super::exp(f32::NAN).is_nan());
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
    }
}
