//! Splitting a kernel's output across the interpreter's threads. The interpreter installs its
//! pool for the duration of an invoke ([`with_pool`]); a kernel hands [`for_each_chunk`] its
//! output cut into independent chunks, which run on the pool's threads when there is one and
//! in order on the calling thread otherwise. Every chunk computes its values exactly as it
//! would alone, so results do not depend on the thread count.

use std::cell::Cell;
use std::ptr::NonNull;

use rayon::prelude::*;

thread_local! {
    /// The pool of the invoke running on this thread, if it has more than one thread.
    static POOL: Cell<Option<NonNull<rayon::ThreadPool>>> = const { Cell::new(None) };
}

/// Runs `f` with `pool` as this thread's pool for [`for_each_chunk`].
pub fn with_pool<R>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R) -> R {
    /// Restores the previous pool even if `f` unwinds, so no dangling pool is left behind.
    struct Restore(Option<NonNull<rayon::ThreadPool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            POOL.set(self.0);
        }
    }
    let _restore = Restore(POOL.replace(pool.map(NonNull::from)));
    f()
}

/// Threads the current invoke may use (1 outside a pool).
#[cfg(test)]
pub fn threads() -> usize {
    POOL.get().map_or(1, |pool| {
        // SAFETY: `with_pool` keeps the pointer valid while it is set.
        unsafe { pool.as_ref() }.current_num_threads()
    })
}

/// Multiply-accumulates below which a kernel runs on one thread: waking another costs more
/// than it saves (measured: a 0.9 M MAC convolution took twice as long on two threads).
pub const MIN_PARALLEL_WORK: usize = 4 << 20;

/// Calls `f(index, chunk)` for every `chunk_len`-long chunk of `data` (the last may be
/// shorter): on the current invoke's threads when there are several, more than one chunk and
/// at least [`MIN_PARALLEL_WORK`] in all (`work`, in multiply-accumulates or the like).
pub fn for_each_chunk<T, F>(data: &mut [T], chunk_len: usize, work: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync,
{
    let chunk_len = chunk_len.max(1);
    match POOL.get() {
        Some(pool) if data.len() > chunk_len && work >= MIN_PARALLEL_WORK => {
            // SAFETY: `with_pool` keeps the pointer valid while it is set.
            let pool = unsafe { pool.as_ref() };
            pool.install(|| {
                data.par_chunks_mut(chunk_len)
                    .enumerate()
                    .for_each(|(i, chunk)| f(i, chunk));
            });
        }
        _ => {
            for (i, chunk) in data.chunks_mut(chunk_len).enumerate() {
                f(i, chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_data_once_with_and_without_a_pool() {
        let fill = || {
            let mut data = vec![0usize; 1000];
            for_each_chunk(&mut data, 64, MIN_PARALLEL_WORK, |i, chunk| {
                for (j, v) in chunk.iter_mut().enumerate() {
                    *v += i * 64 + j;
                }
            });
            data
        };
        let expected: Vec<usize> = (0..1000).collect();
        assert_eq!(fill(), expected);
        assert_eq!(threads(), 1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let (parallel, threads_inside) = with_pool(Some(&pool), || (fill(), threads()));
        assert_eq!(parallel, expected);
        assert_eq!(threads_inside, 3);
        assert_eq!(threads(), 1, "the pool is uninstalled afterwards");
    }
}
