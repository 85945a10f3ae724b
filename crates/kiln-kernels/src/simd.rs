//! Run-time CPU dispatch. Each hot loop is written once, generic over [`Math`], and compiled
//! three times: for AVX-512, for AVX2 + FMA, and for the baseline target. The loops are plain
//! Rust that LLVM vectorizes for whichever features the copy was compiled with; the copy is
//! chosen once per call from what the CPU reports.

/// How a multiply-add is computed: fused where the CPU has FMA (one rounding, one
/// instruction), separately on the baseline target (where `mul_add` would be a libm call).
pub(crate) trait Math {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

pub(crate) struct Fused;
pub(crate) struct Separate;

impl Math for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl Math for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Baseline,
}

pub(crate) fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("fma")
            {
                Level::Avx512
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                Level::Avx2
            } else {
                Level::Baseline
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    Level::Baseline
}

/// `multiversion!(pub(crate) fn name(args) => body::<M>)` defines `name`, which calls
/// `body::<Fused>` compiled with AVX-512 or AVX2 + FMA enabled when the CPU has them, and
/// `body::<Separate>` otherwise. `body` must be `#[inline(always)]` so it is compiled into each
/// copy with that copy's features.
macro_rules! multiversion {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $body::<$crate::simd::Fused>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body::<$crate::simd::Fused>($($arg),*)
                }
                match $crate::simd::level() {
                    // SAFETY: `level()` reported that this CPU has the features each copy
                    // was compiled for.
                    $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Level::Baseline => {}
                }
            }
            $body::<$crate::simd::Separate>($($arg),*)
        }
    };
}

pub(crate) use multiversion;

/// Independent partial sums a reduction keeps in vector registers.
pub(crate) const LANES: usize = 16;

/// Σ a[i]·b[i] over 16 independent lanes (a fixed order, so the result is reproducible),
/// which LLVM keeps in vector registers; a single running sum would serialize on each add.
#[inline(always)]
pub(crate) fn dot<M: Math>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; LANES];
    let mut a_chunks = a.chunks_exact(LANES);
    let mut b_chunks = b.chunks_exact(LANES);
    for (x, y) in (&mut a_chunks).zip(&mut b_chunks) {
        for i in 0..LANES {
            lanes[i] = M::mul_add(x[i], y[i], lanes[i]);
        }
    }
    for (i, (x, y)) in a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .enumerate()
    {
        lanes[i] = M::mul_add(*x, *y, lanes[i]);
    }
    lanes.iter().sum()
}

/// y[i] += a · x[i]
#[inline(always)]
pub(crate) fn axpy<M: Math>(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = M::mul_add(a, *x, *y);
    }
}

multiversion!(fn sum_into(values: &[f32], total: &mut f32) => sum_body);

#[inline(always)]
fn sum_body<M: Math>(values: &[f32], total: &mut f32) {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            lanes[i] += chunk[i];
        }
    }
    *total = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
}

/// Σ values over [`LANES`] independent partial sums, vectorized for the CPU at hand.
pub(crate) fn sum(values: &[f32]) -> f32 {
    let mut total = 0.0;
    sum_into(values, &mut total);
    total
}
