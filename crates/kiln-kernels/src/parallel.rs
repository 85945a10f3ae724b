//! How the kernels share the thread pool (rayon's, which Burn's flex backend uses too, so
//! training never oversubscribes the cores).
//!
//! Work is split so that every float is summed in an order that does not depend on the number
//! of threads or on scheduling: the same inputs give the same bits, run after run, which is
//! what makes Kiln's trained files reproducible.

use rayon::prelude::*;

use crate::matmul::Threads;

/// Runs `work(scratch, n, out_n, threads)` for every image `n`, where `out_n` is image `n`'s
/// `per_image` floats of `out`. Images run in parallel, each product on one thread; a single
/// image spreads its products over the pool instead.
pub(crate) fn for_each_image<S, T: Send>(
    out: &mut [T],
    per_image: usize,
    scratch: impl Fn() -> S + Sync + Send,
    work: impl Fn(&mut S, usize, &mut [T], Threads) + Sync + Send,
) {
    if per_image == 0 {
        return;
    }
    if out.len() <= per_image {
        let mut s = scratch();
        work(&mut s, 0, out, Threads::Pool);
        return;
    }
    out.par_chunks_mut(per_image)
        .enumerate()
        .for_each_init(scratch, |s, (n, out_n)| work(s, n, out_n, Threads::One));
}

/// How many partial sums a batch reduction is split into: fixed, not the thread count, so
/// the sum's order (and its bits) is the same on every machine.
const BATCH_PARTS: usize = 8;

/// Σ over images of `accumulate(n, partial)`, computed as up to [`BATCH_PARTS`] partial sums
/// over contiguous runs of images (in parallel), then added in order into `total`.
/// `accumulate` adds image `n`'s contribution into `partial`, which starts zeroed.
pub(crate) fn sum_over_images<S>(
    batch: usize,
    total: &mut [f32],
    scratch: impl Fn() -> S + Sync + Send,
    accumulate: impl Fn(&mut S, usize, &mut [f32], Threads) + Sync + Send,
) {
    let threads = if batch.min(BATCH_PARTS) == 1 {
        Threads::Pool
    } else {
        Threads::One
    };
    sum_over_image_runs(batch, total, scratch, |s, images, partial| {
        for n in images {
            accumulate(s, n, partial, threads);
        }
    });
}

/// [`sum_over_images`] handing each part its whole run of images, for kernels that work on
/// several images at once: `accumulate(scratch, images, partial)` adds the run's contribution
/// into `partial`. The runs depend only on `batch`, so the sum's order does too.
pub(crate) fn sum_over_image_runs<S>(
    batch: usize,
    total: &mut [f32],
    scratch: impl Fn() -> S + Sync + Send,
    accumulate: impl Fn(&mut S, std::ops::Range<usize>, &mut [f32]) + Sync + Send,
) {
    total.fill(0.0);
    if batch == 0 {
        return;
    }
    let parts = batch.min(BATCH_PARTS);
    if parts == 1 {
        accumulate(&mut scratch(), 0..batch, total);
        return;
    }
    let run = batch.div_ceil(parts);
    let len = total.len();
    let partials: Vec<Vec<f32>> = (0..batch.div_ceil(run))
        .into_par_iter()
        .map_init(scratch, |s, part| {
            let mut partial = vec![0.0; len];
            accumulate(s, part * run..((part + 1) * run).min(batch), &mut partial);
            partial
        })
        .collect();
    for partial in &partials {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += *p;
        }
    }
}
