//! The `report` stage: `report.json`, `report.md` and the plots, from the run's data, its
//! exported variants and every earlier stage's section.

use anyhow::Result;
use tracing::info;

use crate::context::RunContext;
use crate::digest::sha256_hex;
use crate::report::{DatasetReport, Report, ReportSection, compare_with_fp32};
use crate::stage::{Stage, StageKind, StageTable};

pub const KIND: StageKind = StageKind {
    name: "report",
    table: StageTable::None,
    makes_source: false,
    needs: &[],
    parse: |_| Ok(Box::new(ReportStage)),
};

struct ReportStage;

impl Stage for ReportStage {
    fn name(&self) -> &'static str {
        KIND.name
    }

    fn run(&self, run: &mut RunContext<'_>) -> Result<Option<ReportSection>> {
        let config = run.config();
        let mut variants: Vec<_> = run.exported.iter().map(|e| e.report.clone()).collect();
        compare_with_fp32(&mut variants);
        let report = Report {
            name: config.name.clone(),
            config_file: std::path::absolute(run.config_path)
                .unwrap_or_else(|_| run.config_path.to_path_buf())
                .display()
                .to_string(),
            config_sha256: sha256_hex(run.loaded.effective_toml.as_bytes()),
            seed: config.seed,
            backend: config.train.backend.name().into(),
            stages: run.stages.iter().map(|s| (*s).to_owned()).collect(),
            dataset: DatasetReport::new(run.splits, &config.data.normalization())?,
            variants,
            latency_runtime: format!(
                "batch 1, 1 thread, {}",
                kiln_runtime::kernel_sets()
            ),
            sections: std::mem::take(&mut run.sections),
            total_seconds: run.started.elapsed().as_secs_f64(),
        };
        report.write(run.run_dir)?;
        info!(
            "wrote {} and {}",
            run.run_dir.join("report.json").display(),
            run.run_dir.join("report.md").display()
        );
        Ok(None)
    }
}
