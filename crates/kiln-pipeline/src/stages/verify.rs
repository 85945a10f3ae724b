//! The `verify` stage: kiln-runtime runs every exported file, as written to disk, over the
//! test split; each gets its accuracy, its latency and its parity with the Burn model it came
//! from (argmax agreement, largest logit difference).

use anyhow::{Context, Result};
use tracing::info;

use crate::context::RunContext;
use crate::report::{Parity, ReportSection};
use crate::stage::{Stage, StageKind, StageTable};
use crate::verify::verify_variant;

pub const KIND: StageKind = StageKind {
    name: "verify",
    table: StageTable::None,
    makes_source: false,
    needs: &["export"],
    parse: |_| Ok(Box::new(VerifyStage)),
};

struct VerifyStage;

impl Stage for VerifyStage {
    fn name(&self) -> &'static str {
        KIND.name
    }

    fn run(&self, run: &mut RunContext<'_>) -> Result<Option<ReportSection>> {
        let test_set = &run.splits.test;
        let latency_runs = run.loaded.config.verify.latency_runs;
        for exported in &mut run.exported {
            let reference = &run.models[exported.model].reference;
            let verified =
                verify_variant(&exported.path, test_set, &reference.logits, latency_runs)
                    .with_context(|| format!("verifying {}", exported.path.display()))?;
            let variant = &mut exported.report;
            info!(
                "{} verified: accuracy {:.2}%, max |{} − kiln-runtime| {:.3e}, argmax agreement {:.2}%, p50 {} ms",
                variant.name,
                100.0 * verified.accuracy,
                reference.model,
                verified.max_abs_diff,
                100.0 * verified.argmax_agreement,
                crate::commands::bench::milliseconds(verified.latency_ms_p50)
            );
            variant.accuracy = Some(verified.accuracy);
            variant.latency_ms_p50 = Some(verified.latency_ms_p50);
            variant.parity = Some(Parity {
                reference: reference.model.into(),
                max_abs_diff: verified.max_abs_diff,
                argmax_agreement: verified.argmax_agreement,
            });
        }
        Ok(None)
    }
}
