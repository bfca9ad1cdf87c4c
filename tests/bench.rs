//! The benchmark's work formulas and its JSON schema (the benchmark itself is not a test).

use whorl::backend::cpu::CpuBackend;
use whorl::backend::{ConvAlgorithm, ConvInput, WinogradTile};
use whorl::bench::work::{ConvPass, conv_work, model_executed_flops};
use whorl::bench::{BenchReport, markdown, model_flops, run};
use whorl::graph::convolutions;
use whorl::model::Architecture;

#[test]
fn a_training_image_costs_11_33_gflop_and_its_forward_pass_3_79() {
    let (train, forward) = model_flops(&Architecture::reference(), 224).unwrap();
    assert!((forward / 1e9 - 3.786).abs() < 0.001, "forward {forward:e}");
    assert!((train / 1e9 - 11.33).abs() < 0.005, "training {train:e}");
}

#[test]
fn the_executed_arithmetic_of_a_training_image_is_7_44_gflop() {
    // conv5 and conv6 read upsampled inputs: forward 4/9 and backward 1/4 of nominal, so a
    // step at batch 128 drops from 1.45 to about 0.95 TFLOP; conv1's kernel gradient, pooled
    // in the same step, computes its forward pass again (0.029 GFLOP).
    let direct = ConvAlgorithm::Direct;
    let (train, forward) = model_executed_flops(&Architecture::reference(), 224, direct).unwrap();
    assert!((forward / 1e9 - 2.727).abs() < 0.001, "forward {forward:e}");
    assert!((train / 1e9 - 7.437).abs() < 0.001, "training {train:e}");
    let convs = convolutions(&Architecture::reference(), 224, 224, 128).unwrap();
    let conv5 = &convs[4];
    assert_eq!(conv5.read, ConvInput::Upsampled2);
    let nominal = 2.0 * 128.0 * 112.0 * 112.0 * 9.0 * 128.0 * 64.0;
    let forward = conv_work(conv5, ConvPass::Forward, direct);
    assert_eq!(
        (forward.flops, forward.executed_flops),
        (nominal, nominal * 4.0 / 9.0)
    );
    let filter = conv_work(conv5, ConvPass::BackwardFilter, direct);
    assert_eq!(filter.executed_flops, nominal / 4.0);
    let conv4 = conv_work(&convs[3], ConvPass::BackwardData, direct);
    assert_eq!(conv4.executed_flops, conv4.flops);
}

#[test]
fn winograd_executes_4_9_of_the_plain_passes_and_16_81_and_9_64_of_conv5s() {
    // conv2-conv4 run all three passes by F(2x2, 3x3), conv5's forward by F(3, 2) over the
    // output's phases and its backward passes by F(4, 2) over the box sums; conv1's forward
    // and kernel gradient (one input channel) stay direct, conv6's forward (one output
    // channel) four phase convolutions and its backward passes box sums, and conv1's forward
    // runs twice (it is pooled in the same step): a CPU training image executes 3.49 GFLOP.
    let winograd = ConvAlgorithm::Winograd(WinogradTile::TwoByTwo);
    let (train, forward) = model_executed_flops(&Architecture::reference(), 224, winograd).unwrap();
    assert!((forward / 1e9 - 1.242).abs() < 0.001, "forward {forward:e}");
    assert!((train / 1e9 - 3.493).abs() < 0.001, "training {train:e}");
    let convs = convolutions(&Architecture::reference(), 224, 224, 32).unwrap();
    for pass in [
        ConvPass::Forward,
        ConvPass::BackwardData,
        ConvPass::BackwardFilter,
    ] {
        let conv4 = conv_work(&convs[3], pass, winograd);
        assert_eq!(conv4.executed_flops, conv4.flops * 4.0 / 9.0, "{pass:?}");
        let conv6 = conv_work(&convs[5], pass, winograd);
        assert_eq!(
            conv6.executed_flops,
            conv_work(&convs[5], pass, ConvAlgorithm::Direct).executed_flops
        );
    }
    let conv5 = conv_work(&convs[4], ConvPass::Forward, winograd);
    assert_eq!(conv5.executed_flops, conv5.flops * (16.0 / 81.0));
    for pass in [ConvPass::BackwardData, ConvPass::BackwardFilter] {
        let conv5 = conv_work(&convs[4], pass, winograd);
        assert_eq!(conv5.executed_flops, conv5.flops * 9.0 / 64.0, "{pass:?}");
    }
    let conv1 = conv_work(&convs[0], ConvPass::BackwardFilter, winograd);
    assert_eq!(conv1.executed_flops, conv1.flops);
}

#[test]
fn winograd_by_4x4_tiles_executes_a_quarter_of_the_plain_passes() {
    // conv2-conv4 by F(4x4, 3x3), the rest as with F(2x2, 3x3). Their nine passes cost 5.55
    // GFLOP an image nominally, 2.466 at 4/9 and 1.387 at 1/4: a CPU training image executes
    // 3.493 - 1.079 = 2.414 GFLOP.
    let by_4x4 = ConvAlgorithm::Winograd(WinogradTile::FourByFour);
    let by_2x2 = ConvAlgorithm::Winograd(WinogradTile::TwoByTwo);
    let (train, _) = model_executed_flops(&Architecture::reference(), 224, by_4x4).unwrap();
    assert!((train / 1e9 - 2.414).abs() < 0.001, "training {train:e}");
    let convs = convolutions(&Architecture::reference(), 224, 224, 32).unwrap();
    for pass in [
        ConvPass::Forward,
        ConvPass::BackwardData,
        ConvPass::BackwardFilter,
    ] {
        let conv2 = conv_work(&convs[1], pass, by_4x4);
        assert_eq!(conv2.executed_flops, conv2.flops / 4.0, "{pass:?}");
        // conv1 (one input channel) and conv5-conv6 (upsampled inputs) as with F(2x2, 3x3),
        // but for conv1's backward-data, which training never runs: a plain Winograd pass.
        for conv in [&convs[0], &convs[4], &convs[5]] {
            if conv.slot.in_channels == 1 && pass == ConvPass::BackwardData {
                continue;
            }
            let (got, two) = (conv_work(conv, pass, by_4x4), conv_work(conv, pass, by_2x2));
            assert_eq!(got.executed_flops, two.executed_flops, "{pass:?}");
        }
    }
}

#[test]
fn the_gpu_in_fp32_executes_4_9_of_the_plain_passes() {
    // conv2-conv4's three passes by F(2x2, 3x3) (conv2d_winograd.cu); conv1's forward and
    // kernel gradient (one input channel) direct, conv5's and conv6's forward passes four phase
    // convolutions: a training image executes 4.35 GFLOP.
    let algorithm = ConvAlgorithm::WinogradPlain;
    let (train, forward) =
        model_executed_flops(&Architecture::reference(), 224, algorithm).unwrap();
    assert!((forward / 1e9 - 1.699).abs() < 0.001, "forward {forward:e}");
    assert!((train / 1e9 - 4.355).abs() < 0.001, "training {train:e}");
    let convs = convolutions(&Architecture::reference(), 224, 224, 32).unwrap();
    let share = |conv, pass| {
        let work = conv_work(conv, pass, algorithm);
        work.executed_flops / work.flops
    };
    for conv in &convs[1..4] {
        for pass in [
            ConvPass::Forward,
            ConvPass::BackwardData,
            ConvPass::BackwardFilter,
        ] {
            assert_eq!(share(conv, pass), 4.0 / 9.0, "{pass:?}");
        }
    }
    assert_eq!(share(&convs[0], ConvPass::Forward), 1.0);
    assert_eq!(share(&convs[0], ConvPass::BackwardFilter), 1.0);
    assert_eq!(share(&convs[4], ConvPass::Forward), 4.0 / 9.0);
    assert_eq!(share(&convs[4], ConvPass::BackwardData), 0.25);
}

#[test]
fn convolution_work_follows_the_formulas() {
    let convs = convolutions(&Architecture::reference(), 224, 224, 128).unwrap();
    // conv2: 128 x 112 x 112 pixels, 9 x 32 x 64 multiply-adds each.
    let conv2 = &convs[1];
    let work = conv_work(conv2, ConvPass::Forward, ConvAlgorithm::Direct);
    assert_eq!(work.flops, 2.0 * 128.0 * 112.0 * 112.0 * 9.0 * 32.0 * 64.0);
    let input = 128.0 * 112.0 * 112.0 * 32.0;
    let output = 128.0 * 112.0 * 112.0 * 64.0;
    assert_eq!(work.bytes, 4.0 * (input + 18_496.0 + output));
    // conv6 reads its input upsampled: nominal work over the 224 x 224 grid, the stored input.
    let conv6 = convs.last().unwrap();
    assert_eq!(conv6.read, ConvInput::Upsampled2);
    let work = conv_work(conv6, ConvPass::BackwardFilter, ConvAlgorithm::Direct);
    assert_eq!(work.flops, 2.0 * 128.0 * 224.0 * 224.0 * 9.0 * 64.0);
    let stored = 128.0 * 112.0 * 112.0 * 64.0;
    assert_eq!(work.bytes, 4.0 * (stored + 128.0 * 224.0 * 224.0 + 577.0));
}

#[test]
fn the_report_has_every_kernel_and_round_trips_through_json() {
    let report = run(CpuBackend::new(), "cpu", 1, 16, 1, None).unwrap();
    let names: Vec<&str> = report.kernels.iter().map(|k| k.name.as_str()).collect();
    for expected in [
        "conv1 forward",
        "conv1 backward-filter",
        "conv4 backward-data",
        "conv6 backward-filter",
        "pool1 forward",
        "pool2 backward (with the input's ReLU derivative)",
        "mse loss",
        "rmsprop (all parameters)",
        "adam (all parameters)",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names.contains(&"conv1 backward-data"),
        "the first layer needs no input gradient"
    );
    assert!(report.train_images_per_s > 0.0 && report.inference_images_per_s > 0.0);
    assert!(
        report
            .kernels
            .iter()
            .all(|k| k.median_ms > 0.0 && k.gbs > 0.0 && k.executed_gflops <= k.gflops)
    );
    // Each row carries its fastest and slowest call around the median, and shows them.
    for k in &report.kernels {
        let (min, max) = (k.min_ms.unwrap(), k.max_ms.unwrap());
        assert!(min <= k.median_ms && k.median_ms <= max, "{k:?}");
        let row = format!("| {:.3} | {min:.3}-{max:.3} |", k.median_ms);
        assert!(markdown(&report).contains(&row), "{row}");
    }
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "framework",
        "device",
        "batch_size",
        "size",
        "train_step_ms",
        "train_images_per_s",
        "inference_ms",
        "inference_images_per_s",
        "kernels",
    ] {
        assert!(json.get(field).is_some(), "{field} missing");
    }
    let back: BenchReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
    // The PyTorch baseline writes the same top-level fields with no kernels.
    let torch = r#"{"framework": "pytorch 2.5", "device": "cpu", "batch_size": 8, "size": 224,
        "repeats": 5, "train_step_ms": 800.0, "train_images_per_s": 10.0, "inference_ms": 200.0,
        "inference_images_per_s": 40.0, "kernels": []}"#;
    let torch: BenchReport = serde_json::from_str(torch).unwrap();
    let table = whorl::bench::compare(&report, &torch);
    assert!(
        table.contains("training images/s") && table.contains("x |"),
        "{table}"
    );
}

#[test]
fn peaks_are_the_datasheet_figures_for_the_precision_in_use() {
    use whorl::backend::Precision;
    use whorl::backend::gpu::cuda::GpuInfo;
    // An H100 SXM as its driver reports it: 132 SMs at 1,980 MHz, 5,120-bit HBM3 at 2,619 MHz.
    let h100 = GpuInfo {
        ordinal: 0,
        name: "NVIDIA H100 80GB HBM3".into(),
        compute_capability: (9, 0),
        multiprocessors: 132,
        memory_bytes: 80 << 30,
        clock_khz: 1_980_000,
        memory_clock_khz: 2_619_000,
        memory_bus_bits: 5120,
    };
    let fp32 = h100.peaks(Precision::Fp32).unwrap();
    let tf32 = h100.peaks(Precision::Tf32).unwrap();
    assert!((fp32.flops / 1e12 - 66.9).abs() < 0.1, "{fp32:?}");
    assert!((tf32.flops / 1e12 - 535.2).abs() < 0.1, "{tf32:?}");
    assert!((tf32.bytes_per_s / 1e12 - 3.35).abs() < 0.01, "{tf32:?}");
    // A chip whose tensor rate is not listed falls back to its FP32 rate.
    let unknown = GpuInfo {
        compute_capability: (12, 0),
        ..h100
    };
    assert_eq!(
        unknown.peaks(Precision::Tf32),
        unknown.peaks(Precision::Fp32)
    );
}

#[test]
fn the_report_lists_the_gemm_tiles_chosen_by_timing_and_reads_reports_without_them() {
    let json = r#"{"framework": "whorl 0.1.0", "device": "cuda:0", "batch_size": 128,
        "size": 224, "repeats": 5, "train_step_ms": 17.8, "train_images_per_s": 7191.0,
        "inference_ms": 5.2, "inference_images_per_s": 24615.0, "kernels": []}"#;
    let mut report: BenchReport = serde_json::from_str(json).unwrap();
    assert!(report.timed_tiles.is_empty());
    assert!(!whorl::bench::markdown(&report).contains("chosen by timing"));
    let line = "401408 x 128 GEMM over K = 1152 (TF32): conv2d_gathered_gemm_tf32_wide_four_warps \
                (0.801 ms; conv2d_gathered_gemm_tf32_wide 0.953 ms)";
    report.timed_tiles.push(line.to_string());
    let markdown = whorl::bench::markdown(&report);
    assert!(
        markdown.contains("chosen by timing") && markdown.contains(&format!("- {line}\n")),
        "{markdown}"
    );
    let back: BenchReport = serde_json::from_value(serde_json::to_value(&report).unwrap()).unwrap();
    assert_eq!(back, report);
}

#[test]
fn the_pytorch_baselines_pass_rows_carry_whorls_names_and_nominal_flops() {
    // bench/baseline.py's rows, as bench/torch_baseline.py writes them with cuDNN's times (here
    // a stand-in millisecond each: this machine has no GPU and no PyTorch).
    let script = "import json, sys; sys.path.insert(0, 'bench'); import baseline as b; \
                  rows = [b.conv_pass_row(p, 1e-3) for p in b.conv_passes(1, 16)]; \
                  print(json.dumps(b.report('pytorch', 'gpu', 1, 16, 1, 0.1, 0.05, 'fp32', rows)))";
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3 runs the baseline scripts");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let torch: BenchReport = serde_json::from_slice(&output.stdout).unwrap();
    let whorl = run(CpuBackend::new(), "cpu", 1, 16, 1, None).unwrap();
    // "convN PASS", not the fused rows ("conv2 forward + pool2 ...").
    let is_pass = |name: &str| match name.split_once(' ') {
        Some((layer, pass)) => {
            layer.starts_with("conv")
                && ["forward", "backward-data", "backward-filter"].contains(&pass)
        }
        None => false,
    };
    let whorl_passes: Vec<_> = whorl.kernels.iter().filter(|k| is_pass(&k.name)).collect();
    assert_eq!(
        whorl_passes.len(),
        17,
        "six layers, conv1 without backward-data"
    );
    assert_eq!(torch.kernels.len(), whorl_passes.len());
    for (ours, theirs) in whorl_passes.iter().zip(&torch.kernels) {
        assert_eq!(ours.name, theirs.name);
        assert_eq!(ours.work.flops, theirs.work.flops, "{}", ours.name);
        assert_eq!(theirs.median_ms, 1.0);
    }
    let table = whorl::bench::compare(&whorl, &torch);
    let rows = table.lines().filter(|line| line.contains(" ms | ")).count();
    assert_eq!(rows, 17, "{table}");
    assert!(table.contains("| conv5 backward-data ms |"), "{table}");
    // A pass the other framework runs faster is marked; one it runs slower is not.
    let mut torch = torch;
    torch.kernels[0].median_ms = 1e-6;
    torch.kernels[1].median_ms = 1e6;
    let table = whorl::bench::compare(&whorl, &torch);
    let row = |name| compare_row(&table, name);
    assert!(row("conv1 forward").ends_with("x (slower) |"), "{table}");
    assert!(row("conv1 backward-filter").ends_with("x |"), "{table}");

    // Two whorl runs: a kernel whose calls' ranges overlap is marked, one whose do not is not.
    let mut before = whorl.clone();
    let timed = |k: &mut whorl::bench::KernelTiming, median: f64, (lo, hi): (f64, f64)| {
        (k.median_ms, k.min_ms, k.max_ms) = (median, Some(lo), Some(hi));
    };
    let mut after = whorl.clone();
    timed(&mut before.kernels[0], 10.0, (9.0, 12.0));
    timed(&mut after.kernels[0], 11.0, (10.5, 11.5));
    timed(&mut before.kernels[1], 10.0, (9.5, 10.5));
    timed(&mut after.kernels[1], 8.0, (7.5, 8.5));
    let table = whorl::bench::compare(&after, &before);
    let row = |name| compare_row(&table, name);
    assert!(
        row("conv1 forward").ends_with("0.91x (slower, ranges overlap) |"),
        "{table}"
    );
    assert!(row("conv1 backward-filter").ends_with("1.25x |"), "{table}");
}

/// The row of `whorl compare`'s table for kernel `name`.
fn compare_row<'a>(table: &'a str, name: &str) -> &'a str {
    let start = format!("| {name} ms |");
    let row = table.lines().find(|line| line.starts_with(&start));
    row.unwrap_or_else(|| panic!("no row {start} in {table}"))
}
