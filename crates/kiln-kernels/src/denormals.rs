//! Flush-to-zero while training. Late in training, gradients and Adam's moments shrink into
//! the denormal range, where every SSE/AVX operation producing such a value takes a
//! microcode assist: the quickstart's last epochs ran 40–60% slower than its first (0.5 s →
//! 0.7–0.8 s). TensorFlow runs its CPU threads with flush-to-zero set for the same reason.
//!
//! Only MXCSR's flush-to-zero bit is set, through inline assembly: Rust documents changing
//! the denormals-are-zero, masking or rounding flags as undefined behaviour, and FTZ alone
//! removed the whole slowdown (denormals are never produced, so none is read).

/// MXCSR's flush-to-zero bit.
#[cfg(target_arch = "x86_64")]
const FLUSH_TO_ZERO: u32 = 1 << 15;

/// While alive, float results too small to be normal are zero on the creating thread and
/// on every thread of rayon's pool (the one Burn's flex backend and the kernels run on).
/// The pool's setting is shared: the first live guard sets it and the last one dropped
/// restores it, so concurrent trainings (tests in one process) all run flushed from start
/// to end. Training is deterministic either way: the same inputs flush the same values.
#[must_use = "flush-to-zero lasts only as long as the guard"]
pub struct FlushToZero {
    /// The creating thread's previous bit.
    #[cfg(target_arch = "x86_64")]
    caller_was: bool,
}

/// Live guards, and the pool threads' bits from before the first of them (by rayon index).
#[cfg(target_arch = "x86_64")]
static POOL: std::sync::Mutex<(usize, Vec<bool>)> = std::sync::Mutex::new((0, Vec::new()));

#[cfg(target_arch = "x86_64")]
fn pool_state() -> std::sync::MutexGuard<'static, (usize, Vec<bool>)> {
    // The state is two plain values, consistent even if a holder panicked.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FlushToZero {
    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let mut pool = pool_state();
            if pool.0 == 0 {
                // The pool before the caller: its threads start on first use, with their
                // creator's MXCSR, which must still be the caller's own.
                pool.1 = rayon::broadcast(|_| set_flush_to_zero(true));
            }
            pool.0 += 1;
            Self {
                caller_was: set_flush_to_zero(true),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self {}
    }
}

impl Default for FlushToZero {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FlushToZero {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        {
            set_flush_to_zero(self.caller_was);
            let mut pool = pool_state();
            pool.0 -= 1;
            if pool.0 == 0 {
                let previous = std::mem::take(&mut pool.1);
                rayon::broadcast(|context| {
                    if let Some(&was) = previous.get(context.index()) {
                        set_flush_to_zero(was);
                    }
                });
            }
        }
    }
}

/// Sets or clears this thread's flush-to-zero bit; returns whether it was set.
#[cfg(target_arch = "x86_64")]
fn set_flush_to_zero(on: bool) -> bool {
    let mut csr = 0u32;
    // SAFETY: stmxcsr/ldmxcsr read and write this thread's MXCSR through a local; only the
    // flush-to-zero bit changes (see the module comment).
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        let was = csr & FLUSH_TO_ZERO != 0;
        let new = if on {
            csr | FLUSH_TO_ZERO
        } else {
            csr & !FLUSH_TO_ZERO
        };
        std::arch::asm!("ldmxcsr [{}]", in(reg) &new, options(nostack, preserves_flags));
        was
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn denormal_product() -> f32 {
        // Through black_box so the product is computed at run time, not folded.
        std::hint::black_box(1.0e-30f32) * std::hint::black_box(1.0e-10f32)
    }

    #[test]
    fn flushes_while_alive_and_restores_after() {
        assert!(denormal_product() > 0.0, "denormals are kept by default");
        {
            let outer = FlushToZero::new();
            let inner = FlushToZero::new();
            assert_eq!(denormal_product(), 0.0);
            drop(inner);
            // The pool stays flushed while any guard lives.
            let pool: Vec<f32> = rayon::broadcast(|_| denormal_product());
            assert!(pool.iter().all(|&v| v == 0.0), "{pool:?}");
            assert_eq!(
                denormal_product(),
                0.0,
                "the outer guard's thread still flushes"
            );
            drop(outer);
        }
        assert!(denormal_product() > 0.0);
        let pool: Vec<f32> = rayon::broadcast(|_| denormal_product());
        assert!(pool.iter().all(|&v| v > 0.0), "{pool:?}");
    }
}
