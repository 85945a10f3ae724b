//! Per-thread working buffers for the kernels (gathered receptive fields, GEMM sums), reused
//! across invokes instead of allocated in each: a large `Vec` per call costs an `mmap`, page
//! faults and zeroing every time.

use std::cell::Cell;

/// Element types with a per-thread buffer.
pub trait Scratch: Copy + Default + 'static {
    /// Runs `f` on this thread's buffer, at least `len` long. The contents are whatever the
    /// last user left: callers write before they read. A nested call gets a fresh buffer.
    fn with<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

macro_rules! scratch {
    ($($t:ty => $slot:ident),* $(,)?) => {$(
        thread_local! {
            static $slot: Cell<Vec<$t>> = const { Cell::new(Vec::new()) };
        }

        impl Scratch for $t {
            fn with<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                let mut buffer = $slot.take();
                if buffer.len() < len {
                    buffer.resize(len, <$t>::default());
                }
                let result = f(&mut buffer[..len]);
                $slot.set(buffer);
                result
            }
        }
    )*};
}

scratch!(f32 => F32_SCRATCH, u8 => U8_SCRATCH, i32 => I32_SCRATCH);

thread_local! {
    static IMAGE_SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A second per-thread byte buffer, at least `len` long, for a whole (padded) image that the
/// kernel holds while it gathers rows into the first ([`Scratch::with`]), which would
/// otherwise have to allocate a fresh buffer as a nested call.
pub fn with_image_bytes<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buffer = IMAGE_SCRATCH.take();
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
    let result = f(&mut buffer[..len]);
    IMAGE_SCRATCH.set(buffer);
    result
}

#[cfg(test)]
mod tests {
    use super::Scratch;

    #[test]
    fn buffers_are_reused_and_nested_calls_get_their_own() {
        let first = f32::with(100, |outer| {
            outer.fill(1.0);
            f32::with(10, |inner| {
                inner.fill(2.0);
                assert_eq!(inner.len(), 10);
            });
            assert!(
                outer.iter().all(|&v| v == 1.0),
                "the nested call left it alone"
            );
            outer.as_ptr() as usize
        });
        let again = f32::with(50, |buffer| buffer.as_ptr() as usize);
        assert_eq!(first, again, "the larger buffer is kept");
    }
}
