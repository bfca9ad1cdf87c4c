//! The convolution kernels, checked in machine code: their PTX is assembled by ptxas for sm_89
//! (Ada, L40S) and sm_90a (Hopper, H100), disassembled by nvdisasm, and every TF32 and BF16
//! tensor-core kernel must have HMMA (mma.sync) and LDGSTS (cp.async) instructions in its main
//! loop — the innermost loop holding at least half its HMMAs; the BF16 kernels' all
//! HMMA.16816.F32.BF16 — and no local-memory traffic (LDL/STL: register spills); the warpgroup
//! kernels (wgmma, sm_90a only) alike with HGMMA; every FP32
//! convolution kernel's main loop must be mostly FFMA, with at most a quarter of index
//! arithmetic.
//!
//! Checked: the kernels the binary ships (build.rs's PTX of kernels/), and the tiled GEMM of
//! tests/kernels/tensor_core_gemm.cu, compiled here by NVRTC, which proves the check on a kernel
//! built from kernels/whorl.cuh's primitives. Each kernel's instruction mix is printed.
//!
//! Without NVRTC, ptxas or nvdisasm (scripts/nvrtc-env.sh installs them from PyPI into .cuda/
//! and sets WHORL_PTXAS and WHORL_NVDISASM) the test says it was skipped and why; in CI
//! (CI=true) it fails instead.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use whorl::backend::gpu::cuda::EMBEDDED_PTX;

/// Tensor-core kernels: names containing "tf32" or "bf16", except the deliberately broken ones
/// of tests/kernels/.
fn runs_on_tensor_cores(kernel: &str) -> bool {
    (kernel.contains("tf32") || kernel.contains("bf16")) && !kernel.starts_with("broken_")
}

/// The mma.sync of the BF16 kernels.
const BF16_MMA: &str = "HMMA.16816.F32.BF16";

/// The least number of m16n8k8 mma per instruction of a tensor-core kernel's main loop (for
/// mma.sync, HMMA's share of it). The test GEMM's small warp tile (32 x 32, operands rounded as
/// they are read) reaches 0.07-0.08.
const MIN_MMA_PER_INSTRUCTION: f64 = 0.05;

/// The tensor-core instruction of a kernel's main loop on the architectures it is compiled for:
/// HGMMA (wgmma) on sm_90a for the warpgroup kernels, which trap elsewhere; HMMA (mma.sync
/// m16n8k8) everywhere for the others.
fn tensor_core_opcode(kernel: &str, sm: &str) -> Option<&'static str> {
    match (kernel.contains("wgmma"), sm) {
        (true, "sm_90a") => Some("HGMMA"),
        (true, _) => None,
        (false, _) => Some("HMMA"),
    }
}

/// How many m16n8k8 mma's worth of K a tensor-core instruction does per warp: an HGMMA.64xNx8
/// (a warp's share 16 x N x 8) N / 8, an HMMA.1688 one, an HMMA.16816 (m16n8k16) two.
fn mma_per_instruction(instruction: &str) -> usize {
    let shape = instruction.split('.').nth(1).unwrap_or_default();
    match instruction.split('.').next() {
        Some("HGMMA") => {
            let columns = shape
                .split('x')
                .nth(1)
                .and_then(|n| n.parse::<usize>().ok());
            columns.unwrap_or_else(|| panic!("no 64xNx8 shape in {instruction}")) / 8
        }
        _ if shape == "16816" => 2,
        _ => 1,
    }
}

/// The FP32 convolution kernels whose main loop multiplies on the CUDA cores: the GEMMs
/// (common::FP32_GEMM_KERNELS) and these Winograd kernels.
const WINOGRAD_KERNELS: [&str; 2] = ["conv2d_winograd", "conv2d_winograd_filter_partials"];

/// Index arithmetic: integer instructions, and MUFU (reciprocals of integer divisions).
const INTEGER_OPCODES: [&str; 11] = [
    "IMAD", "IADD3", "VIADD", "ISETP", "LOP3", "SHF", "LEA", "SEL", "IABS", "IMNMX", "MUFU",
];

/// An FP32 convolution kernel's main loop: at least this share FFMA, at most this share index
/// arithmetic (they reach 56-81% and 10-23% on sm_89 and sm_90).
const MIN_FFMA_SHARE: f64 = 0.5;
const MAX_INTEGER_SHARE: f64 = 0.25;

/// Test kernels compiled here, which must hold at least one tensor-core kernel.
const TEST_SOURCES: [&str; 1] = ["tests/kernels/tensor_core_gemm.cu"];

/// One kernel's machine code: each instruction's opcode with its modifiers
/// ("HGMMA.64x128x8.F32.TF32"), and the loops, as (first, last) instruction indices of each
/// backward branch's span.
struct Sass {
    instructions: Vec<String>,
    loops: Vec<(usize, usize)>,
}

/// An instruction's opcode without its modifiers (HGMMA).
fn opcode(instruction: &str) -> &str {
    instruction.split('.').next().unwrap_or_default()
}

impl Sass {
    /// Each instruction's opcode without its modifiers.
    fn opcodes(&self) -> Vec<&str> {
        self.instructions.iter().map(|i| opcode(i)).collect()
    }

    fn count(&self, range: std::ops::RangeInclusive<usize>, opcodes: &[&str]) -> usize {
        self.instructions[range]
            .iter()
            .filter(|instruction| opcodes.contains(&opcode(instruction)))
            .count()
    }

    /// The m16n8k8 mma a range's `wanted` instructions do per warp.
    fn mma(&self, range: std::ops::RangeInclusive<usize>, wanted: &str) -> usize {
        self.instructions[range]
            .iter()
            .filter(|instruction| opcode(instruction) == wanted)
            .map(|instruction| mma_per_instruction(instruction))
            .sum()
    }

    /// The most frequent opcodes of a range, with their counts, most frequent first.
    fn mix(&self, range: std::ops::RangeInclusive<usize>) -> String {
        let mut counts = BTreeMap::<&str, usize>::new();
        for instruction in &self.instructions[range] {
            *counts.entry(opcode(instruction)).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by_key(|&(op, n)| (std::cmp::Reverse(n), op));
        let top: Vec<String> = counts
            .iter()
            .take(8)
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        top.join(", ")
    }

    /// The main loop of a kernel that multiplies with `opcode` (HMMA, FFMA): the innermost loop
    /// holding at least half of the kernel's `opcode` instructions.
    fn main_loop(&self, opcode: &str) -> Option<(usize, usize)> {
        let total = self.count(0..=self.instructions.len().saturating_sub(1), &[opcode]);
        self.loops
            .iter()
            .copied()
            .filter(|&(first, last)| total > 0 && 2 * self.count(first..=last, &[opcode]) >= total)
            .min_by_key(|&(first, last)| last - first)
    }
}

/// Every kernel of nvdisasm's listing, by name.
fn parse_listing(listing: &str) -> BTreeMap<String, Sass> {
    let mut kernels = BTreeMap::new();
    for section in listing.split("//--------------------- .text.").skip(1) {
        let name = section
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let mut instructions = Vec::new();
        let mut labels = BTreeMap::new();
        let mut branches = Vec::new();
        for line in section.lines().map(str::trim) {
            if let Some(label) = line.strip_suffix(':').filter(|l| l.starts_with(".L_x_")) {
                labels.insert(label.to_string(), instructions.len());
                continue;
            }
            // "/*0a40*/  @!P0 BRA `(.L_x_3) ;": an address, an optional predicate, the opcode.
            let Some(rest) = line.strip_prefix("/*").and_then(|l| l.split_once("*/")) else {
                continue;
            };
            let mut words = rest.1.split_whitespace().skip_while(|w| w.starts_with('@'));
            let Some(instruction) = words.next() else {
                continue;
            };
            let target = line.split("`(").nth(1).and_then(|t| t.split(')').next());
            if let (true, Some(target)) = (opcode(instruction) == "BRA", target) {
                branches.push((instructions.len(), target.to_string()));
            }
            instructions.push(instruction.to_string());
        }
        let loops = branches
            .iter()
            .filter_map(|(at, target)| labels.get(target).map(|&first| (first, *at)))
            .filter(|&(first, last)| first < last)
            .collect();
        kernels.insert(
            name,
            Sass {
                instructions,
                loops,
            },
        );
    }
    kernels
}

/// Assembles `ptx` for `sm` and disassembles it. ptxas must not have serialized any wgmma (it
/// warns "wgmma.mma_async instructions are serialized" where a kernel's registers or fences
/// would let the tensor cores race the warp, and makes each wait for the one before).
fn disassemble(ptxas: &Path, nvdisasm: &Path, ptx: &str, sm: &str) -> BTreeMap<String, Sass> {
    let dir = tempfile::tempdir().unwrap();
    let (source, cubin) = (dir.path().join("k.ptx"), dir.path().join("k.cubin"));
    std::fs::write(&source, ptx).unwrap();
    let run = |tool: &Path, args: &[&std::ffi::OsStr]| {
        let output = Command::new(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
        assert!(
            output.status.success(),
            "{} failed:\n{}",
            tool.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let warnings = String::from_utf8_lossy(&output.stderr);
        assert!(
            !warnings.contains("serialized"),
            "{} on {sm}:\n{warnings}",
            tool.display()
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let arch = format!("-arch={sm}");
    run(
        ptxas,
        &[
            arch.as_ref(),
            "-O3".as_ref(),
            source.as_ref(),
            "-o".as_ref(),
            cubin.as_ref(),
        ],
    );
    parse_listing(&run(nvdisasm, &["--print-code".as_ref(), cubin.as_ref()]))
}

/// The tools, or why they are missing.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    // SAFETY: only probes whether the library can be loaded.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("libnvrtc was not found".into());
    }
    if EMBEDDED_PTX.iter().any(|(_, ptx)| ptx.is_empty()) {
        return Err("the binary was built without NVRTC, so it holds no PTX".into());
    }
    let tool = |variable: &str| {
        std::env::var_os(variable)
            .map(PathBuf::from)
            .filter(|path| path.is_file())
            .ok_or(format!("{variable} does not name a file"))
    };
    Ok((tool("WHORL_PTXAS")?, tool("WHORL_NVDISASM")?))
}

fn test_source_ptx(source: &str, arch: &'static str) -> String {
    let include = std::fs::canonicalize("kernels").unwrap();
    let options = CompileOptions {
        arch: Some(arch),
        include_paths: vec![include.display().to_string()],
        name: Some(source.into()),
        ..Default::default()
    };
    let text = std::fs::read_to_string(source).unwrap();
    compile_ptx_with_opts(text, options)
        .unwrap_or_else(|e| panic!("{source} for {arch}: {e:?}"))
        .to_src()
}

#[test]
fn tensor_core_kernels_run_hmma_and_ldgsts_in_their_main_loop_without_spills() {
    let Some((ptxas, nvdisasm)) =
        tools_or_skip("tensor_core_kernels_run_hmma_and_ldgsts_in_their_main_loop_without_spills")
    else {
        return;
    };
    let (mut checked_shipped_kernels, mut checked_test_kernels) = (0, 0);
    let (mut warpgroup_kernels, mut bf16_kernels) = (0, 0);
    for (arch, shipped) in EMBEDDED_PTX {
        let sm = arch.replace("compute", "sm");
        let sources = std::iter::once(("kernels/".to_string(), shipped.to_string()))
            .chain(TEST_SOURCES.map(|s| (s.to_string(), test_source_ptx(s, arch))));
        for (origin, ptx) in sources {
            for (kernel, sass) in disassemble(&ptxas, &nvdisasm, &ptx, &sm) {
                let Some(mma) = tensor_core_opcode(&kernel, &sm) else {
                    continue;
                };
                if !runs_on_tensor_cores(&kernel) {
                    continue;
                }
                let all = 0..=sass.instructions.len() - 1;
                let spills = sass.count(all.clone(), &["LDL", "STL"]);
                let main_loop = sass.main_loop(mma);
                let (first, last) = main_loop.unwrap_or((0, 0));
                let body = first..=last;
                let (hmma, ldgsts) = (
                    sass.count(body.clone(), &[mma]),
                    sass.count(body.clone(), &["LDGSTS"]),
                );
                // m16n8k8 mma a main-loop instruction.
                let share = sass.mma(body.clone(), mma) as f64 / body.clone().count() as f64;
                println!(
                    "{sm} {origin} {kernel}: {} instructions, {spills} LDL/STL; main loop {} \
                     instructions: {mma} {hmma} ({:.0} mma per 100 instructions), LDGSTS \
                     {ldgsts}; {}",
                    sass.instructions.len(),
                    body.clone().count(),
                    100.0 * share,
                    sass.mix(body.clone()),
                );
                assert!(main_loop.is_some(), "{sm} {kernel}: no loop holds an {mma}");
                if mma == "HGMMA" {
                    warpgroup_kernels += 1;
                }
                if kernel.contains("bf16") {
                    let all_bf16 = sass.instructions[body.clone()]
                        .iter()
                        .filter(|i| opcode(i) == "HMMA")
                        .all(|i| i == BF16_MMA);
                    assert!(all_bf16, "{sm} {kernel}: an HMMA other than {BF16_MMA}");
                    bf16_kernels += 1;
                }
                assert!(
                    ldgsts > 0,
                    "{sm} {kernel}: no LDGSTS (cp.async) in the main loop"
                );
                assert_eq!(spills, 0, "{sm} {kernel}: local-memory traffic (spills)");
                assert!(
                    share >= MIN_MMA_PER_INSTRUCTION,
                    "{sm} {kernel}: only {share:.3} mma an instruction in the main loop"
                );
                if origin == "kernels/" {
                    checked_shipped_kernels += 1;
                } else {
                    checked_test_kernels += 1;
                }
            }
        }
    }
    if checked_shipped_kernels == 0 {
        println!("no kernel of kernels/ is named *tf32* yet: only the test kernels were checked");
    }
    assert_eq!(
        warpgroup_kernels, 6,
        "the four warpgroup GEMM kernels and two kernel-gradient ones, checked on sm_90a"
    );
    assert_eq!(
        bf16_kernels,
        2 * 10,
        "the seven BF16 GEMM kernels and three kernel-gradient ones, on sm_89 and sm_90a"
    );
    assert!(
        checked_test_kernels >= 2,
        "the test kernels must hold a tensor-core kernel per architecture"
    );
}

/// The tools, or the test skipped (failed in CI) with the reason.
fn tools_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match tools() {
        Ok(tools) => Some(tools),
        Err(why) => {
            let why = format!("{why} (source scripts/nvrtc-env.sh, as .ci/run does)");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must check the machine code: {why}"
            );
            common::skipped(test, &why);
            None
        }
    }
}

#[test]
fn fp32_convolution_main_loops_are_multiply_adds_not_index_arithmetic() {
    let Some((ptxas, nvdisasm)) =
        tools_or_skip("fp32_convolution_main_loops_are_multiply_adds_not_index_arithmetic")
    else {
        return;
    };
    for (arch, shipped) in EMBEDDED_PTX {
        let sm = arch.replace("compute", "sm");
        let kernels = disassemble(&ptxas, &nvdisasm, shipped, &sm);
        for kernel in common::FP32_GEMM_KERNELS.iter().chain(&WINOGRAD_KERNELS) {
            let sass = &kernels[*kernel];
            let (first, last) = sass
                .main_loop("FFMA")
                .unwrap_or_else(|| panic!("{sm} {kernel}: no loop holds its FFMAs"));
            let body = first..=last;
            let length = body.clone().count() as f64;
            let ffma = sass.count(body.clone(), &["FFMA"]) as f64 / length;
            let integer = sass.count(body.clone(), &INTEGER_OPCODES) as f64 / length;
            println!(
                "{sm} {kernel}: main loop {length} instructions, FFMA {:.0}%, index arithmetic \
                 {:.0}%; {}",
                100.0 * ffma,
                100.0 * integer,
                sass.mix(body)
            );
            assert!(ffma >= MIN_FFMA_SHARE, "{sm} {kernel}: FFMA only {ffma:.3}");
            assert!(
                integer <= MAX_INTEGER_SHARE,
                "{sm} {kernel}: index arithmetic {integer:.3} of the main loop"
            );
        }
    }
}

#[test]
fn the_listing_parser_finds_the_innermost_loop_that_holds_hmma() {
    // Two kernels as nvdisasm prints them: `outer` nests a loop of HMMAs in a loop of copies,
    // and ends with the self-branch every kernel has; `plain` loops without an HMMA.
    let listing = "
//--------------------- .text.outer              --------------------------
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_1:
        /*0010*/                   LDGSTS.E.BYPASS.128 [R2], [R4.64] ;
.L_x_2:
        /*0020*/                   LDS R8, [R2] ;
        /*0030*/                   HMMA.1688.F32.TF32 R12, R8, R10, R12 ;
        /*0040*/              @!P0 BRA `(.L_x_2) ;
        /*0050*/                   STL [R1], R12 ;
        /*0060*/               @P1 BRA `(.L_x_1) ;
        /*0070*/                   EXIT ;
.L_x_3:
        /*0080*/                   BRA `(.L_x_3);
//--------------------- .text.plain              --------------------------
.L_x_4:
        /*0000*/                   HFMA2.MMA R4, -RZ, RZ, 0, 0 ;
        /*0010*/               @P0 BRA `(.L_x_4) ;
";
    let kernels = parse_listing(listing);
    let outer = &kernels["outer"];
    assert_eq!(outer.instructions.len(), 9);
    assert_eq!(outer.loops, [(2, 4), (1, 6)]);
    assert_eq!(outer.main_loop("HMMA"), Some((2, 4)));
    assert_eq!(outer.count(0..=8, &["LDL", "STL"]), 1);
    let plain = &kernels["plain"];
    assert_eq!(plain.opcodes(), ["HFMA2", "BRA"]);
    assert_eq!(plain.main_loop("HMMA"), None);
}
