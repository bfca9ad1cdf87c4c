//! The `whorl` command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use whorl::model::Architecture;

use cli::analyze::{EvalArgs, GradcamArgs, ReconstructArgs};
use cli::bench::BenchArgs;
use cli::demo::DemoArgs;
use cli::synth::SynthArgs;
use cli::train::TrainArgs;

/// Trains a convolutional autoencoder that reconstructs 224x224 grayscale fingerprint images.
#[derive(Parser)]
#[command(name = "whorl", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the reference autoencoder on a folder of fingerprint images.
    Train(TrainArgs),
    /// Generate synthetic fingerprints (SFinGe-style): a data set, or with --figure a picture.
    Synth(SynthArgs),
    /// Score a trained model: MSE, PSNR and SSIM per image, and their mean, median and worst
    /// per set, as a table (and JSON and CSV with --out).
    Eval(EvalArgs),
    /// Draw originals above their reconstructions and the error, for a random sample.
    Reconstruct(ReconstructArgs),
    /// Draw where a convolution layer builds the reconstruction (Grad-CAM, target: the sum of
    /// the output image; see the README).
    Gradcam(GradcamArgs),
    /// Redraw a run's loss curve (RUN/loss.png) from its history.csv.
    PlotHistory {
        /// The run folder (holding history.csv).
        run: PathBuf,
        /// Logarithmic loss axis.
        #[arg(long)]
        log: bool,
    },
    /// The whole job in a few minutes: synthesise a small data set, train briefly, evaluate on
    /// the validation split and on the other sensor, then show the bundled model beside it on
    /// that sensor and on real prints (../shared/data/real-fingerprints when present), and draw
    /// the loss curve, the bundled model's reconstructions and Grad-CAM maps, and the trained
    /// model's reconstructions beside them.
    Demo(DemoArgs),
    /// Time every kernel at the model's shapes, then the training step and inference
    /// (markdown on screen, JSON with --json).
    Bench(BenchArgs),
    /// Compare two benchmark JSON files (whorl's, or bench/torch_baseline.py's or
    /// bench/keras_baseline.py's): the first's speed-up over the second, for the training step,
    /// inference and every kernel both name, each under 1 marked "slower".
    Compare {
        /// The benchmark whose speed-up is reported.
        first: PathBuf,
        /// The one it is compared against.
        second: PathBuf,
    },
    /// Print whorl's version and build, the CUDA driver, NVRTC and every GPU found.
    Info,
    /// Print the model's layers, output shapes and parameter counts (like Keras's summary()).
    Summary {
        /// Input height and width in pixels (a multiple of 4).
        #[arg(long, default_value_t = 224)]
        size: usize,
    },
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`whorl info | head`), instead of failing to print.
    // SAFETY: restores the default action of one signal before any thread starts.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let result = match Cli::parse().command {
        Command::Train(args) => cli::train::run_train(args),
        Command::Synth(args) => cli::synth::run_synth(args),
        Command::Info => cli::info::run_info(),
        Command::Bench(args) => cli::bench::run_bench(args),
        Command::Compare { first, second } => cli::bench::run_compare(&first, &second),
        Command::Eval(args) => cli::analyze::run_eval(args),
        Command::Reconstruct(args) => cli::analyze::run_reconstruct(args),
        Command::Gradcam(args) => cli::analyze::run_gradcam(args),
        Command::PlotHistory { run, log } => whorl::history::plot_history(&run, log).map(|path| {
            println!("loss curve written to {}", path.display());
            ExitCode::SUCCESS
        }),
        Command::Demo(args) => cli::demo::run_demo(args),
        Command::Summary { size } => Architecture::reference().summary(size, size).map(|s| {
            print!("{s}");
            ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(error.exit_status())
    })
}
