//! The scripts that run on a GPU machine, run here on the CPU: scripts/gpu-check.sh as a GPU
//! machine without Rust runs it (`--bin DIR`, DIR holding the archive `--build` packs), with a
//! stand-in `nvidia-smi`, `ncu`, `compute-sanitizer` and GPU-test binary (it must go through every stage, write its
//! report and fail, since the GPU tests fail), and scripts/recipe-study.sh on a tiny synthetic
//! set.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A command's standard output and error, for assertion messages.
fn log(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn executable(path: &Path, script: &str) {
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A GPU machine without Rust, as scripts/gpu-check.sh sees it, in `dir`: stand-in `nvidia-smi`,
/// `ncu` and `compute-sanitizer` on PATH, and the binaries packed as `--build` packs them, the
/// GPU tests being `gpu_tests` (a shell script). Returns the command that runs the check with
/// `--bin` (its results under `results`).
fn stand_in_gpu_machine(dir: &Path, gpu_tests: &str, results: &Path) -> Command {
    let (tools, binaries, bin) = (dir.join("tools"), dir.join("binaries"), dir.join("bin"));
    for folder in [&tools, &binaries, &bin] {
        std::fs::create_dir(folder).unwrap();
    }
    executable(
        &tools.join("nvidia-smi"),
        "#!/bin/sh\necho 'Stand-in GPU'\n",
    );
    // The stand-in profiler prints the command it was given, as its report would name it.
    executable(&tools.join("ncu"), "#!/bin/sh\necho \"ncu $*\"\n");
    // The stand-in sanitizer prints its command too, and finds a race (its error status is the
    // one the script asks for).
    executable(
        &tools.join("compute-sanitizer"),
        "#!/bin/sh\necho \"compute-sanitizer $*\"\ncase \"$*\" in *racecheck*) exit 99;; esac\n",
    );
    executable(&binaries.join("gpu-tests"), gpu_tests);
    let whorl = format!("#!/bin/sh\nexec '{}' \"$@\"\n", env!("CARGO_BIN_EXE_whorl"));
    executable(&binaries.join("whorl"), &whorl);
    let archive = bin.join("whorl-binaries.tar.gz");
    let packed = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&binaries)
        .args(["whorl", "gpu-tests"])
        .status()
        .unwrap();
    assert!(packed.success());
    let path = format!("{}:{}", tools.display(), std::env::var("PATH").unwrap());
    let mut command = Command::new("bash");
    command
        .args(["scripts/gpu-check.sh", "--bin", common::path(&bin)])
        .env("PATH", path)
        .env("GPU_CHECK_RESULTS", results);
    command
}

/// Runs a GPU check that must fail (exit status 1) and returns the folder its report is in, the
/// only one under `results`.
fn failed_check(mut check: Command, results: &Path) -> PathBuf {
    let output = check.output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", log(&output));
    std::fs::read_dir(results)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn gpu_check_reports_every_stage_and_fails_when_the_gpu_tests_fail() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    // The stand-in GPU tests print how they were run, then fail.
    let gpu_tests = "#!/bin/sh\necho \"gpu-tests $*\"\necho 'test result: FAILED. 0 passed; 1 failed'\nexit 101\n";
    let run = failed_check(
        stand_in_gpu_machine(dir.path(), gpu_tests, &results),
        &results,
    );
    assert!(
        run.file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("-stand-in-gpu"),
        "{run:?}"
    );
    // Uncaptured: what the GPU tests print (whether the warpgroup tiles give the mma.sync tiles'
    // bits, the timed tile choices, a skipped test's reason) is what the run is for.
    let tests = std::fs::read_to_string(run.join("gpu-tests.txt")).unwrap();
    assert!(
        tests.contains("--ignored") && tests.contains("--nocapture"),
        "{tests}"
    );
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("GPU tests (`gpu-tests --ignored`): FAILED"),
        "{report}"
    );
    assert!(
        report.contains("| GPU precision | epoch | train loss GPU | train loss CPU |"),
        "{report}"
    );
    assert!(
        report.contains("Kernel profiles (Nsight Compute, ncu-fp32.txt and ncu-tf32.txt): ran"),
        "{report}"
    );
    for precision in ["fp32", "tf32"] {
        let profile = std::fs::read_to_string(run.join(format!("ncu-{precision}.txt"))).unwrap();
        for wanted in [
            "--clock-control none".to_string(),
            "--filter-mode per-launch-config --launch-count 1".to_string(),
            format!("bench --device cuda --precision {precision} --repeats 1"),
        ] {
            assert!(profile.contains(&wanted), "{wanted} in {profile}");
        }
        // TF32's profile and one more TF32 benchmark take Hopper's warpgroup tiles too.
        let warpgroups = profile.contains("--warpgroup-tiles");
        assert_eq!(warpgroups, precision == "tf32", "{profile}");
    }
    assert!(
        report.contains(
            "compute-sanitizer (sanitizer-*.txt): memcheck-tf32 clean, memcheck-fp32 clean, \
             racecheck-tf32 ERRORS"
        ),
        "{report}"
    );
    for (check, tool, precision) in [
        ("memcheck-tf32", "memcheck", "tf32"),
        ("memcheck-fp32", "memcheck", "fp32"),
        ("racecheck-tf32", "racecheck", "tf32"),
    ] {
        let log = std::fs::read_to_string(run.join(format!("sanitizer-{check}.txt"))).unwrap();
        for wanted in [
            format!("--tool {tool} --error-exitcode 99"),
            format!("train --device cuda --precision {precision}"),
        ] {
            assert!(log.contains(&wanted), "{wanted} in {log}");
        }
    }
    assert!(!run.join("sanitizer-run").exists());
    for bench in ["bench-whorl-tf32-warpgroup.md", "bench-whorl-bf16.md"] {
        assert!(run.join(bench).is_file(), "{bench}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["gpu_tests_passed"], false);
    assert_eq!(json["kernel_profiles"], "ran");
    assert_eq!(json["compute_sanitizer"]["clean"], false, "{json}");
    for (precision, tolerance) in [("fp32", 1e-2), ("tf32", 1e-2), ("bf16", 3e-2)] {
        assert_eq!(json["training"][precision]["agree"], false, "{json}");
        assert_eq!(
            json["training"][precision]["tolerance"], tolerance,
            "{json}"
        );
    }
    // The CPU half of the training comparison ran whatever happened to the GPU half.
    let history = std::fs::read_to_string(run.join("train-cpu-fp32/history.csv")).unwrap();
    assert_eq!(history.lines().count(), 4, "{history}");
    assert!(
        !run.join("cache").exists(),
        "the synthetic data is removed afterwards"
    );
    for kept_out in ["checkpoints", ".lock"] {
        let path = run.join("train-cpu-fp32").join(kept_out);
        assert!(!path.exists(), "{} is left in the report", path.display());
    }
}

#[test]
fn gpu_check_seconds_cut_a_stage_short_and_still_write_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    // GPU tests that would run for a minute, where the check has a few seconds.
    let gpu_tests = "#!/bin/sh\necho started\nsleep 60\necho finished\n";
    let mut check = stand_in_gpu_machine(dir.path(), gpu_tests, &results);
    check.env("GPU_CHECK_SECONDS", "16");
    let run = failed_check(check, &results);
    let tests = std::fs::read_to_string(run.join("gpu-tests.txt")).unwrap();
    assert!(
        tests.contains("started") && !tests.contains("finished"),
        "{tests}"
    );
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("GPU tests (`gpu-tests --ignored`): FAILED"),
        "{report}"
    );
}

#[test]
fn the_recipe_study_trains_and_scores_every_recipe() {
    // On the CPU with a tiny synthetic set: every recipe of the list (whole prints resized, and
    // crops at their own resolution) is trained, scored on the unseen sensor and on a folder of
    // "real" prints, tabulated, and its checkpoints removed.
    let dir = tempfile::tempdir().unwrap();
    let (out, real) = (dir.path().join("study"), dir.path().join("real"));
    common::write_striped_images(&real, 2, 48);
    let recipes = dir.path().join("recipes.txt");
    std::fs::write(
        &recipes,
        "# comments and blank lines are skipped\n\n\
         whole-rmsprop  --size 32 --optimizer rmsprop --batch-size 4\n\
         crop-adam      --crop 32 --optimizer adam --batch-size 4 --augment flip\n",
    )
    .unwrap();
    let run_study = || {
        Command::new("bash")
            .args([
                "scripts/recipe-study.sh",
                env!("CARGO_BIN_EXE_whorl"),
                common::path(&out),
                common::path(&real),
            ])
            .env("WHORL_CACHE", dir.path().join("cache"))
            .env("STUDY_DEVICE", "cpu")
            .env("STUDY_EPOCHS", "1")
            .env("STUDY_RECIPES", &recipes)
            .env(
                "STUDY_TRAIN_ARGS",
                "--synth-fingers 4 --synth-impressions 2",
            )
            .output()
            .unwrap()
    };
    let output = run_study();
    let log = log(&output);
    assert!(output.status.success(), "{log}");
    let study = std::fs::read_to_string(out.join("study.md")).unwrap();
    let rows: Vec<&str> = study.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 3, "a header and two recipes: {study}");
    assert!(
        rows[1].starts_with("| whole-rmsprop | `--size 32 --optimizer rmsprop --batch-size 4` |")
    );
    assert!(rows[2].starts_with("| crop-adam | `--crop 32"), "{study}");
    for row in &rows[1..] {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for ssim in &cells[4..6] {
            let ssim: f64 = ssim.parse().unwrap_or_else(|_| panic!("{row}"));
            assert!((-1.0..=1.0).contains(&ssim), "{row}");
        }
        let run = out.join(cells[1]);
        assert!(run.join("history.csv").exists(), "{}", run.display());
        assert!(!run.join("checkpoints").exists(), "{}", run.display());
    }
    // Run again, it keeps the scored recipes and tabulates them the same.
    let again = run_study();
    let log_again = self::log(&again);
    assert!(again.status.success(), "{log_again}");
    assert_eq!(
        log_again.matches("scored already, kept").count(),
        2,
        "{log_again}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("study.md")).unwrap(),
        study
    );
}
