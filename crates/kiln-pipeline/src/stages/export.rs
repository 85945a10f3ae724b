//! The `export` stage: every model the stages made is lowered to float32 TFLite and written
//! with its variants (`model_<prefix>_<variant>.tflite`): fp32, fp16, dynamic-range and full
//! int8, calibrated on training images or quantized with QAT's ranges; with `[export] micro`,
//! each int8 file's TensorFlow Lite Micro sources too.

use anyhow::{Context, Result};
use burn::module::Module;
use kiln_nn::Classifier;
use tracing::info;

use crate::config::Variant;
use crate::context::{ExportedVariant, RunContext, StageModel};
use crate::export::{ExportPlan, Int8Ranges, export_variants};
use crate::report::{ReportSection, VariantReport};
use crate::stage::{Stage, StageKind, StageTable};
use crate::stages::qat::tensor_ranges;

pub const KIND: StageKind = StageKind {
    name: "export",
    table: StageTable::None,
    makes_source: false,
    needs: &[],
    parse: |_| Ok(Box::new(ExportStage)),
};

struct ExportStage;

impl Stage for ExportStage {
    fn name(&self) -> &'static str {
        KIND.name
    }

    fn run(&self, run: &mut RunContext<'_>) -> Result<Option<ReportSection>> {
        for index in 0..run.models.len() {
            let exported = export_model(run, &run.models[index], index)?;
            run.exported.extend(exported);
        }
        Ok(None)
    }
}

/// Lowers `model` and writes its variants.
fn export_model(
    run: &RunContext<'_>,
    model: &StageModel,
    index: usize,
) -> Result<Vec<ExportedVariant>> {
    let config = run.config();
    let train_set = &run.splits.train;
    // A student may be another architecture than the config's [model].
    let architecture = model.model.architecture();
    let description = format!("Kiln {} ({architecture})", config.name);
    let what = if model.prefix.is_empty() {
        "the model".to_owned()
    } else {
        format!("the {} model", model.prefix)
    };
    let tflite = model
        .model
        .valid()
        .lower(&description)
        .with_context(|| format!("lowering {what} to TFLite"))?;
    let card = kiln_export::ModelCard {
        name: config.name.clone(),
        // Short on purpose: metadata bytes count against the int8 size budget.
        description: format!(
            "{architecture} classifier, {} classes, by Kiln",
            train_set.class_names.len()
        ),
        version: format!("seed {}", config.seed),
        author: "Kiln".into(),
        labels: train_set.class_names.clone(),
        mean: config.data.mean.clone(),
        std: config.data.std.clone(),
    };
    let int8 = match &model.qat {
        Some(qat) => Int8Ranges::Given(tensor_ranges(qat, &tflite)?),
        None => Int8Ranges::Calibrate {
            train: train_set,
            seed: config.seed,
        },
    };
    let plan = ExportPlan {
        card: &card,
        run_dir: run.run_dir,
        config: &config.export,
        int8: &int8,
    };
    let files = export_variants(&tflite, &model.prefix, &model.variants, &plan)?;
    let mut exported = Vec::with_capacity(files.len());
    for file in files {
        let mut report = VariantReport::for_file(&file.name, run.run_dir, &file.file)?;
        report.sparsity = model.sparsity;
        report.pattern = model.pattern.clone();
        report.clusters = model.clusters;
        report.dense_bytes = file.dense.as_ref().map(|d| d.len() as u64);
        report.sparse_storage =
            (!file.sparse.is_empty()).then(|| crate::export::describe_sparse(&file.sparse));
        report.stages = model.stages.clone();
        report.stages.push(match (&model.qat, file.variant) {
            (Some(_), Variant::Int8) => "export int8 (QAT ranges)".into(),
            (None, Variant::Int8) => "export int8 (calibrated)".into(),
            (_, kind) => format!("export {}", kind.name()),
        });
        if file.variant == Variant::Int8 && config.export.micro {
            let (micro, paths) = match &file.dense {
                Some(dense) => crate::micro::write_bytes(dense, &file.path, run.run_dir)?,
                None => crate::micro::write(&file.path, run.run_dir)?,
            };
            info!(
                "wrote {} and {} for TensorFlow Lite Micro ({} operators, arena {} B)",
                paths[0].display(),
                paths[1].display(),
                micro.registrations.len(),
                micro.arena.total
            );
        }
        exported.push(ExportedVariant {
            path: file.path,
            report,
            model: index,
        });
    }
    Ok(exported)
}
