//! `pipeline`: Kiln's command line. Argument parsing, logging and exit codes only; the work
//! is kiln-pipeline's.

use kiln_pipeline::commands::{
    bench, bench_decode, bench_train, compare, infer, inspect, micro, verify_run,
};
use kiln_pipeline::{RunOptions, run};

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pipeline",
    version,
    about = "Train, compress, export and verify TFLite models from a config"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a config's pipeline: data → train → export → verify → report.
    Run {
        config: PathBuf,
        /// Run directory (default: artifacts/<name>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a config value, e.g. --set train.epochs=2 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue training from the run directory's last complete epoch (after a crash,
        /// kill or Ctrl-C); the result equals an uninterrupted run's.
        #[arg(long)]
        resume: bool,
        /// Compare distilled and plain students over N seeds (mean ± std in the report);
        /// overrides the recipe's [distill] seeds.
        #[arg(long, value_name = "N")]
        seeds: Option<usize>,
    },
    /// Run a .tflite on .npy (or .npz, one array per input) inputs with kiln-runtime.
    Infer {
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Threads the kernels run on (0: every core). Outputs are the same bits on any
        /// number.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// TensorFlow Lite Micro sources for a .tflite: MODEL_data.cc (the file as a 16-byte-aligned
    /// C array) and MODEL_data.h (its length, kTensorArenaSize, and a MicroMutableOpResolver
    /// with one Add...() per operator the model uses).
    Micro {
        model: PathBuf,
        /// Directory for the sources (default: the model's).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show a .tflite's operators, tensors, quantization, sizes and arena.
    Inspect {
        model: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Checks a run directory: first every artifact against manifest.json (sha256; names any
    /// file that changed, is missing or was added), then each variant's parity with the fp32
    /// file (max abs error, RMSE, cosine; --per-layer: every tensor) on the run's test images,
    /// in kiln-runtime.
    Verify {
        /// A run directory written by `pipeline run`.
        run_dir: PathBuf,
        /// Compare every tensor, not only the model's outputs.
        #[arg(long)]
        per_layer: bool,
        /// Variant to compare with fp32, any exported one (`int8`, `qat_int8`, `pruned80_int8`,
        /// …; repeatable; default: the config's dense variants).
        #[arg(long = "variant", value_name = "NAME")]
        variants: Vec<String>,
        /// The first N test images.
        #[arg(long, default_value_t = 100)]
        images: usize,
        #[arg(long)]
        json: bool,
    },
    /// One table across runs: every variant of every run with bytes, gzip bytes, size vs
    /// fp32, accuracy and latency (for comparing configs, seeds or schedules), and one plot of
    /// accuracy against size across them (compare.svg and compare.png).
    Compare {
        /// Run directories written by `pipeline run`.
        #[arg(required = true)]
        run_dirs: Vec<PathBuf>,
        /// Directory for compare.svg and compare.png.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Time kiln-runtime on a .tflite: p50/p90 latency over repeated invokes, arena bytes;
    /// --profile adds each operator's share of the time. Several files are timed in the same
    /// run, their invokes alternating, and compared with the first (e.g. a pruned variant
    /// against the dense one).
    Bench {
        #[arg(required = true)]
        models: Vec<PathBuf>,
        /// Timed invokes (after a warm-up of a tenth as many).
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Also time each operator over as many invokes: its share of the time, the
        /// cumulative share, and the total per operator type.
        #[arg(long)]
        profile: bool,
        /// Threads the kernels run on (0: every core). Outputs are the same bits on any
        /// number.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Training and inference images/s of a SmallCnn on synthetic data (the Rust side of
    /// bench/train_vs_keras.sh).
    BenchTrain {
        /// small_cnn (shaped by --conv-filters, --dense-units) or an architecture with its
        /// default keys: mobilenet_v2, efficientnet_lite0, efficientnet_b0.
        #[arg(long, default_value = "small_cnn")]
        model: String,
        /// height,width,channels
        #[arg(long, value_delimiter = ',', default_values_t = [28, 28, 1])]
        input: Vec<usize>,
        /// Filters of each conv block.
        #[arg(long, value_delimiter = ',', default_values_t = [32, 64])]
        conv_filters: Vec<usize>,
        #[arg(long, default_value_t = 64)]
        dense_units: usize,
        #[arg(long, default_value_t = 10)]
        classes: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Timed steps (after --warmup untimed ones).
        #[arg(long, default_value_t = 30)]
        steps: usize,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// flex, ndarray or wgpu (with the wgpu feature).
        #[arg(long, default_value = "flex")]
        backend: String,
        #[arg(long)]
        json: bool,
    },
    /// Decode + resize throughput (images/s) on one thread and on all cores: synthetic
    /// 500×375 JPEGs, or an image folder's files.
    BenchDecode {
        /// Square output sides, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [96, 224])]
        sizes: Vec<usize>,
        /// Images to decode per measurement.
        #[arg(long, default_value_t = 400)]
        images: usize,
        /// An image folder (root/<class>/*.jpg) to read instead of synthetic photos.
        #[arg(long)]
        folder: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// `pipeline inspect m.tflite | head` should end quietly when `head` closes the pipe, as Unix
/// tools do, instead of panicking in `println!` (Rust ignores SIGPIPE by default).
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; restoring a signal's
    // default disposition has no other effect on the program's memory.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Training allocates and frees tensors of megabytes every step. glibc serves those from
/// fresh `mmap`s and returns them with `munmap`, and each return interrupts the other cores to
/// flush their TLBs: measured, that halved training throughput on 2 cores. Keeping freed
/// memory in the heap for reuse costs nothing but the peak resident size, which Burn reaches
/// anyway. No block gets its own mapping: glibc's largest mmap threshold is 32 MiB, and
/// MobileNetV2's expanded activations at 96 px (56 MiB) were mapped, faulted in page by page
/// (the kernel zeroing each) and unmapped every step: 3–5% of its training time.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; called before any allocation
    // worth the name and before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn parse_backend(name: &str) -> anyhow::Result<kiln_train::BackendKind> {
    match name {
        "flex" => Ok(kiln_train::BackendKind::Flex),
        "ndarray" => Ok(kiln_train::BackendKind::Ndarray),
        "wgpu" => Ok(kiln_train::BackendKind::Wgpu),
        other => anyhow::bail!("unknown backend '{other}': use flex, ndarray or wgpu"),
    }
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    keep_freed_memory();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Run {
            config,
            out,
            overrides,
            resume,
            seeds,
        } => {
            let options = RunOptions {
                out,
                overrides,
                resume,
                seeds,
                handle_ctrl_c: true,
            };
            run(&config, &options).map(|dir| println!("{}", dir.display()))
        }
        Command::Infer {
            model,
            input,
            output,
            threads,
        } => infer::run(&model, &input, &output, threads),
        Command::Inspect { model, json } => inspect::run(&model, json),
        Command::Micro { model, out } => micro::run(&model, out.as_deref()),
        Command::Verify {
            run_dir,
            per_layer,
            variants,
            images,
            json,
        } => verify_run::run(&run_dir, per_layer, &variants, images, json),
        Command::Bench {
            models,
            runs,
            profile,
            threads,
            json,
        } => {
            let paths: Vec<&std::path::Path> = models.iter().map(PathBuf::as_path).collect();
            bench::run(&paths, runs, profile, threads, json)
        }
        Command::Compare {
            run_dirs,
            out,
            json,
        } => compare::run(&run_dirs, &out, json),
        Command::BenchTrain {
            model,
            input,
            conv_filters,
            dense_units,
            classes,
            batch,
            steps,
            warmup,
            backend,
            json,
        } => parse_backend(&backend).and_then(|backend| {
            bench_train::run(&bench_train::TrainBench {
                model,
                input,
                conv_filters,
                dense_units,
                classes,
                batch_size: batch,
                steps,
                warmup,
                backend,
                json,
            })
        }),
        Command::BenchDecode {
            sizes,
            images,
            folder,
            json,
        } => bench_decode::run(&bench_decode::DecodeBench {
            sizes: &sizes,
            images,
            source: folder.as_deref(),
            json,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            let interrupted = error.chain().any(|cause| {
                matches!(
                    cause.downcast_ref::<kiln_train::TrainError>(),
                    Some(kiln_train::TrainError::Interrupted { .. })
                )
            });
            // 130 = 128 + SIGINT, what shells report for a Ctrl-C'd program.
            if interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
