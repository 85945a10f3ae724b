//! Per-operator time over repeated invokes ([`Interpreter::invoke_profiled`]), the way
//! LiteRT's `benchmark_model --enable_op_profiling` reports it: each operator's mean time per
//! invoke and its share of the total.
//!
//! [`Interpreter::invoke_profiled`]: crate::Interpreter::invoke_profiled

use std::time::Duration;

/// Kernel time per operator, summed over the invokes profiled.
#[derive(Clone, Debug, Default)]
pub struct OpProfile {
    /// The subgraph index of the operator behind each timed step.
    operators: Vec<usize>,
    totals: Vec<Duration>,
    invokes: usize,
}

/// One operator's share of a profile.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorTime {
    /// Its index in the subgraph.
    pub index: usize,
    /// Mean kernel time per invoke.
    pub mean: Duration,
    /// Fraction of all operators' time.
    pub share: f64,
}

impl OpProfile {
    pub fn new() -> Self {
        Self::default()
    }

    /// Invokes profiled so far.
    pub fn invokes(&self) -> usize {
        self.invokes
    }

    /// Each operator that ran, in execution order.
    pub fn operators(&self) -> Vec<OperatorTime> {
        let total: Duration = self.totals.iter().sum();
        let invokes = u32::try_from(self.invokes.max(1)).unwrap_or(u32::MAX);
        self.operators
            .iter()
            .zip(&self.totals)
            .map(|(&index, &time)| OperatorTime {
                index,
                mean: time / invokes,
                share: if total.is_zero() {
                    0.0
                } else {
                    time.as_secs_f64() / total.as_secs_f64()
                },
            })
            .collect()
    }

    /// Mean kernel time of a whole invoke (the sum over operators).
    pub fn mean_total(&self) -> Duration {
        let invokes = u32::try_from(self.invokes.max(1)).unwrap_or(u32::MAX);
        self.totals.iter().sum::<Duration>() / invokes
    }

    /// Starts an invoke of `operators` (a re-prepared model may run others: start over).
    pub(crate) fn start_invoke(&mut self, operators: impl ExactSizeIterator<Item = usize> + Clone) {
        if !self.operators.iter().copied().eq(operators.clone()) {
            self.totals = vec![Duration::ZERO; operators.len()];
            self.operators = operators.collect();
            self.invokes = 0;
        }
        self.invokes += 1;
    }

    pub(crate) fn add(&mut self, step: usize, time: Duration) {
        if let Some(total) = self.totals.get_mut(step) {
            *total += time;
        }
    }
}
