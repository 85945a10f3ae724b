//! How the kernels share the thread pool (rayon's, which Burn's flex backend uses too, so
//! training never oversubscribes the cores).
//!
//! Work is split so that every float is summed in an order that does not depend on the number
//! of threads or on scheduling: the same inputs give the same bits, run after run, which is
//! what makes Kiln's trained files reproducible.

use std::ops::Range;

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
    accumulate: impl Fn(&mut S, Range<usize>, &mut [f32]) + Sync + Send,
) {
    let mut no_output: [f32; 0] = [];
    sum_over_image_runs_writing(
        batch,
        total,
        (&mut no_output, 0),
        scratch,
        |s, images, partial, _| accumulate(s, images, partial),
    );
}

/// [`sum_over_image_runs`] that also writes a per-image output: `out` holds `per_image`
/// values for each image, and each run gets its images' part of it.
pub(crate) fn sum_over_image_runs_writing<S, T: Send>(
    batch: usize,
    total: &mut [f32],
    (out, per_image): (&mut [T], usize),
    scratch: impl Fn() -> S + Sync + Send,
    accumulate: impl Fn(&mut S, Range<usize>, &mut [f32], &mut [T]) + Sync + Send,
) {
    total.fill(0.0);
    if batch == 0 {
        return;
    }
    let parts = batch.min(BATCH_PARTS);
    if parts == 1 {
        accumulate(&mut scratch(), 0..batch, total, out);
        return;
    }
    let run = batch.div_ceil(parts);
    let len = total.len();
    let runs = batch.div_ceil(run);
    let mut outs: Vec<&mut [T]> = Vec::with_capacity(runs);
    let mut rest = out;
    for part in 0..runs {
        let images = run.min(batch - part * run);
        let (head, tail) = rest.split_at_mut((images * per_image).min(rest.len()));
        outs.push(head);
        rest = tail;
    }
    let partials: Vec<Vec<f32>> = outs
        .into_par_iter()
        .enumerate()
        .map_init(scratch, |s, (part, out_run)| {
            let mut partial = vec![0.0; len];
            let images = part * run..((part + 1) * run).min(batch);
            accumulate(s, images, &mut partial, out_run);
            partial
        })
        .collect();
    for partial in &partials {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += *p;
        }
    }
}
