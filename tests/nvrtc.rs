//! Every kernel of kernels/ compiles with NVRTC for Ada (compute_89, L40S) and Hopper
//! (compute_90a, H100: with the warpgroup-MMA kernels). With ptxas at hand (WHORL_PTXAS), each
//! kernel's registers, shared memory and spills are printed, and a local-memory spill in a hot
//! kernel fails the test.
//!
//! NVRTC's PTX is not the same from one process to the next (its order of instructions follows
//! the addresses it runs at), and ptxas allocates registers from that order: a kernel right at
//! its register bound (`__launch_bounds__` with a minimum of blocks) can spill in one build and
//! not in the next. The hot kernels so bounded keep a margin: with `.maxnreg` 4 registers under
//! the bound in place of `.minnctapersm` in their PTX, ptxas still compiles each without spills
//! (conv2d_gathered_gemm_wide had none, and once spilled 104 bytes here).
//!
//! Without libnvrtc (a machine with no CUDA) the test says it was skipped and why; in CI
//! (CI=true) it must run: .ci/run installs NVRTC from PyPI into the clone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

const ARCHITECTURES: [&str; 2] = ["compute_89", "compute_90a"];
/// Kernels that carry the training step's arithmetic: they must not spill.
const HOT_KERNELS: [&str; 28] = [
    "conv2d_gathered_gemm",
    "conv2d_gathered_gemm_wide",
    "conv2d_gathered_gemm_narrow",
    "conv2d_gathered_gemm_pooled",
    "conv2d_gathered_gemm_tf32_pooled",
    "conv2d_gathered_gemm_tf32_four_warps",
    "conv2d_gathered_gemm_tf32_wide_four_warps",
    "conv2d_gathered_gemm_tf32_wide_four_warps_long",
    "conv2d_gathered_gemm_tf32_wide_long",
    "conv2d_gathered_gemm_tf32_narrow_four_warps",
    "conv2d_gathered_gemm_tf32_wgmma",
    "conv2d_gathered_gemm_tf32_wgmma_pooled",
    "conv2d_gathered_gemm_tf32_wgmma_wide",
    "conv2d_gathered_gemm_tf32_wgmma_wide_one_warpgroup",
    "conv2d_filter_partials_tf32_wide_four_warps",
    "conv2d_filter_partials_tf32_wgmma",
    "conv2d_filter_partials_tf32_wgmma_wide",
    "conv2d_gathered_gemm_bf16_wide_four_warps",
    "conv2d_gathered_gemm_bf16_pooled",
    "conv2d_filter_partials_bf16_wide_four_warps",
    "conv2d_filter_partials",
    "conv2d_winograd",
    "conv2d_winograd_filter_partials",
    "conv2d_one_input_channel_pooled",
    "conv2d_pooled_filter_partials_one_channel",
    "conv2d_upsampled_one_output_channel",
    "conv2d_upsampled_one_output_channel_scored",
    "conv2d_upsampled_one_output_channel_backward",
];

fn kernel_sources() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("kernels")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    files.sort();
    files
}

/// (kernel, registers, shared bytes, spill bytes) for each entry point ptxas reports.
fn ptxas_report(ptxas: &Path, ptx: &str, sm: &str) -> Vec<(String, u32, u32, u32)> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kernels.ptx");
    std::fs::write(&file, ptx).unwrap();
    let output = Command::new(ptxas)
        .args(["-v", &format!("-arch={sm}"), "-o", "/dev/null"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", ptxas.display()));
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "ptxas failed:\n{log}");
    let number_before = |line: &str, unit: &str| -> u32 {
        line.split(',')
            .find(|part| part.contains(unit))
            .and_then(|part| part.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap_or(0)
    };
    let mut rows: Vec<(String, u32, u32, u32)> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            rows.push((name, 0, 0, 0));
        } else if let Some(row) = rows.last_mut() {
            if line.contains("spill stores") {
                row.3 = number_before(line, "spill stores") + number_before(line, "spill loads");
            } else if line.contains("registers") {
                row.1 = number_before(line, "registers");
                row.2 = number_before(line, "smem");
            }
        }
    }
    rows
}

#[test]
fn every_kernel_compiles_with_nvrtc_for_ada_and_hopper() {
    // SAFETY: only probes whether the library can be loaded.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        let why = "libnvrtc was not found (install nvidia-cuda-nvrtc-cu12 and put its lib folder \
                   on LD_LIBRARY_PATH, as .ci/run does)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must compile the kernels: {why}"
        );
        common::skipped("every_kernel_compiles_with_nvrtc_for_ada_and_hopper", why);
        return;
    }
    let include = std::fs::canonicalize("kernels").unwrap();
    let ptxas = std::env::var_os("WHORL_PTXAS").map(PathBuf::from);
    if ptxas.is_none() {
        eprintln!("no WHORL_PTXAS: registers and spills not checked (.ci/run sets it)");
    }
    // Each source for each architecture on a thread of its own (NVRTC and ptxas take minutes
    // in all, one core each); the reports are printed in order.
    let jobs: Vec<(PathBuf, &'static str)> = kernel_sources()
        .into_iter()
        .flat_map(|source| ARCHITECTURES.map(|arch| (source.clone(), arch)))
        .collect();
    let reports: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = jobs
            .iter()
            .map(|(source, arch)| {
                scope.spawn(|| compile_and_report(source, arch, &include, ptxas.as_deref()))
            })
            .collect();
        let joined = threads.into_iter().map(|thread| thread.join());
        joined
            .map(|report| report.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    for report in reports {
        print!("{report}");
    }
}

/// Compiles `source` with NVRTC for `arch` (its entry points all in the PTX) and, with ptxas,
/// reports each kernel's registers, shared memory and spills, failing on a hot kernel's spill.
fn compile_and_report(
    source: &Path,
    arch: &'static str,
    include: &Path,
    ptxas: Option<&Path>,
) -> String {
    let text = std::fs::read_to_string(source).unwrap();
    let options = CompileOptions {
        arch: Some(arch),
        include_paths: vec![include.display().to_string()],
        name: Some(source.file_name().unwrap().to_string_lossy().into_owned()),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(&text, options)
        .unwrap_or_else(|e| panic!("{} for {arch}: {e:?}", source.display()))
        .to_src();
    let entries = text.matches("__global__").count();
    assert_eq!(
        ptx.matches(".entry ").count(),
        entries,
        "{} for {arch}",
        source.display()
    );
    let mut report = String::new();
    let Some(ptxas) = ptxas else { return report };
    let sm = arch.replace("compute", "sm");
    for (kernel, registers, shared, spills) in ptxas_report(ptxas, &ptx, &sm) {
        report += &format!(
            "{sm} {kernel:<32} {registers:>4} registers {shared:>6} B smem {spills:>4} B spills\n"
        );
        assert!(
            spills == 0 || !HOT_KERNELS.contains(&kernel.as_str()),
            "{kernel} spills {spills} bytes to local memory on {sm}"
        );
    }
    report
}
