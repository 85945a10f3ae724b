//! Splitting a kernel's output across the interpreter's threads. The interpreter makes its
//! pool (the threads besides the invoking one) current for an invoke ([`with_pool`]); a
//! kernel hands [`for_each_chunk`] its output cut into independent chunks. A kernel with
//! enough work splits the chunks into one group per thread: the invoking thread runs the first
//! group itself while the pool runs the others, so a small model never pays for a hand-over
//! between threads. Every chunk computes its values exactly as it would alone, so results do
//! not depend on the thread count.

use std::cell::Cell;
use std::ptr::NonNull;

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

/// Threads the current invoke may use: the pool's and the invoking one (1 outside a pool).
#[cfg(test)]
pub fn threads() -> usize {
    POOL.get().map_or(1, |pool| {
        // SAFETY: `with_pool` keeps the pointer valid while it is set.
        unsafe { pool.as_ref() }.current_num_threads() + 1
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
    let chunks = data.len().div_ceil(chunk_len);
    let pool = POOL
        .get()
        .filter(|_| chunks > 1 && work >= MIN_PARALLEL_WORK);
    let Some(pool) = pool else {
        for (i, chunk) in data.chunks_mut(chunk_len).enumerate() {
            f(i, chunk);
        }
        return;
    };
    // SAFETY: `with_pool` keeps the pointer valid while it is set.
    let pool = unsafe { pool.as_ref() };
    let groups = (pool.current_num_threads() + 1).min(chunks);
    let per_group = chunks.div_ceil(groups);
    let f = &f;
    let run_group = move |first: usize, group: &mut [T]| {
        for (i, chunk) in group.chunks_mut(chunk_len).enumerate() {
            f(first + i, chunk);
        }
    };
    pool.in_place_scope(|scope| {
        let (mine, mut rest) = data.split_at_mut((per_group * chunk_len).min(data.len()));
        let mut first = per_group;
        while !rest.is_empty() {
            let (group, tail) = rest.split_at_mut((per_group * chunk_len).min(rest.len()));
            rest = tail;
            scope.spawn(move |_| run_group(first, group));
            first += per_group;
        }
        run_group(0, mine);
    });
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
            .num_threads(2)
            .build()
            .unwrap();
        let (parallel, threads_inside) = with_pool(Some(&pool), || (fill(), threads()));
        assert_eq!(parallel, expected);
        assert_eq!(threads_inside, 3, "two pool threads and the invoking one");
        assert_eq!(threads(), 1, "the pool is uninstalled afterwards");
    }
}
