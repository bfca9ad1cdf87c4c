//! `whorl synth`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use whorl::{Error, Result};

#[derive(Args)]
#[command(after_help = synth_help())]
pub(crate) struct SynthArgs {
    /// Folder to write the images and manifest.json into (created if needed).
    #[arg(long, value_name = "DIR", required_unless_present = "figure")]
    pub(crate) out: Option<PathBuf>,

    /// Number of distinct fingers; each gets a class drawn with natural frequencies (arch 3.7%,
    /// tented arch 2.9%, left loop 33.8%, right loop 31.7%, whorl 27.9%).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(crate) fingers: usize,

    /// Impressions per finger: each a new placement, rotation, distortion, pressure, skin
    /// condition and noise.
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub(crate) impressions: usize,

    /// Number of the first finger; give two sets different ranges to keep their fingers apart.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) first_finger: usize,

    /// Sensor profile (see below).
    #[arg(long, value_name = "NAME", default_value = "optical")]
    pub(crate) sensor: String,

    /// Seed: the same seed gives the same bytes, on any number of threads.
    #[arg(long, default_value_t = 13)]
    pub(crate) seed: u64,

    /// Image size WxH in pixels instead of the sensor's own.
    #[arg(long, value_name = "WxH")]
    pub(crate) size: Option<String>,

    /// Instead of a data set, draw FILE.png: one row per class with its master fingerprint and
    /// --impressions impressions on each sensor.
    #[arg(long, value_name = "FILE")]
    pub(crate) figure: Option<PathBuf>,
}

fn synth_help() -> String {
    let mut text = String::from("Sensor profiles:\n");
    for sensor in whorl::synth::SENSORS.iter() {
        text += &format!("  {:<11} {}\n", sensor.name, sensor.summary);
    }
    text
}

fn parse_size(text: &str) -> Result<(usize, usize)> {
    let bad = || Error::invalid("--size", format!("\"{text}\" is not WxH, e.g. 388x374"));
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h) = (
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    );
    if !(32..=4096).contains(&w) || !(32..=4096).contains(&h) {
        return Err(Error::invalid(
            "--size",
            "width and height must be 32 to 4096 pixels",
        ));
    }
    Ok((w, h))
}

/// Bytes of manifest.json and its in-memory list per image, at most.
const MANIFEST_BYTES_PER_IMAGE: u128 = 512;

/// Checks that `fingers` x `impressions` images can be counted and listed in memory.
pub(crate) fn check_image_count(fingers: usize, impressions: usize) -> Result<(), String> {
    let images = fingers.checked_mul(impressions).ok_or_else(|| {
        format!("{fingers} fingers x {impressions} impressions is more images than can be counted")
    })?;
    whorl::memory::check_fits(
        &format!("the manifest of {images} images"),
        (images as u128).checked_mul(MANIFEST_BYTES_PER_IMAGE),
    )
}

/// Checks the counts before anything is written: at least one of each, finger numbers that do
/// not run past the largest, a total that fits in memory.
fn check_counts(args: &SynthArgs) -> Result<()> {
    if args.fingers == 0 {
        return Err(Error::invalid("--fingers", "must be at least 1"));
    }
    if args.impressions == 0 {
        return Err(Error::invalid("--impressions", "must be at least 1"));
    }
    if args.first_finger.checked_add(args.fingers).is_none() {
        return Err(Error::invalid(
            "--first-finger",
            format!(
                "{} plus {} fingers runs past the largest finger number, {}",
                args.first_finger,
                args.fingers,
                usize::MAX
            ),
        ));
    }
    check_image_count(args.fingers, args.impressions)
        .map_err(|why| Error::invalid("--fingers", why))
}

pub(crate) fn run_synth(args: SynthArgs) -> Result<ExitCode> {
    let mut sensor = whorl::synth::sensor::sensor(&args.sensor)
        .ok_or_else(|| {
            let names: Vec<_> = whorl::synth::SENSORS.iter().map(|s| s.name).collect();
            Error::invalid(
                "--sensor",
                format!(
                    "unknown sensor \"{}\" (known: {})",
                    args.sensor,
                    names.join(", ")
                ),
            )
        })?
        .clone();
    if let Some(size) = &args.size {
        (sensor.width, sensor.height) = parse_size(size)?;
    }
    if let Some(path) = &args.figure {
        let figure = whorl::synth::figure(args.seed, args.impressions.min(4), 160);
        let mut bytes = std::io::Cursor::new(Vec::new());
        figure
            .write_to(&mut bytes, image::ImageFormat::Png)
            .map_err(|e| Error::invalid("--figure", e.to_string()))?;
        whorl::atomic::write_file(path, bytes.get_ref())?;
        println!("figure written to {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    check_counts(&args)?;
    let out = args.out.expect("clap requires --out without --figure");
    let config = whorl::synth::SynthConfig {
        fingers: args.fingers,
        impressions: args.impressions,
        first_finger: args.first_finger,
        sensor,
        seed: args.seed,
    };
    let started = std::time::Instant::now();
    whorl::atomic::remove_stale_staging(&out)?;
    let manifest = whorl::synth::generate(&out, &config, true)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} {} images ({}x{}) of {} fingers written to {} in {seconds:.1} s ({:.0} images/s); manifest {}",
        manifest.images.len(),
        manifest.sensor,
        manifest.width,
        manifest.height,
        manifest.fingers,
        out.display(),
        manifest.images.len() as f64 / seconds,
        out.join(whorl::synth::MANIFEST_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}
