//! The GEMM kernels' candidate tiles (src/backend/gpu/gemm_tiles.rs) against each other in the
//! emulator: a backend may run any candidate of a shape, so they must give the same bits.

use whorl::backend::ConvInput;
use whorl::backend::gpu::GpuBackend;
use whorl::backend::gpu::emulator::Emulator;
use whorl::backend::gpu::gemm_tiles::TilePolicy;
use whorl::model::Activation;

use super::{conv, nhwc, parity};

/// Forward and backward-data on GEMMs of more than 64 columns, 33-64 and at most 32, odd
/// shapes with partial tiles of pixels and channels: 36 -> 100 runs its forward pass on the
/// 128 x 128 tiles (100 columns reach the last quarter of the tile, where a four-warp tile's
/// second warp column ends) and its backward-data (36 columns) on the 33-64 ones; the
/// upsampled 104 -> 40 its four phase GEMMs (scattered at stride 2) on the 33-64 tiles and its
/// backward-data over dz's box sums (104 columns) on the 128 x 128 ones; 20 -> 28 both passes
/// on the at-most-32 tiles. The kernel gradients of the first two have 100 and 104 columns
/// (the wide partials tiles), the third's 28. (In FP32 the plain convolutions' three passes
/// run by Winograd, not on these GEMMs; the upsampled case's GEMMs remain.) `families` are
/// kernel names, each family's default first: every other candidate runs every case and must
/// give the default's bits.
pub fn check_candidates_agree(
    new: impl Fn(TilePolicy) -> GpuBackend<Emulator>,
    families: &[&[&str]],
) {
    let cases = [
        (nhwc(2, 13, 11, 36), 100, ConvInput::Direct),
        (nhwc(1, 9, 7, 104), 40, ConvInput::Upsampled2),
        (nhwc(2, 15, 11, 20), 28, ConvInput::Direct),
    ];
    assert!(
        families.iter().all(|f| f.len() > 1),
        "a family has candidates to compare"
    );
    let candidates = families.iter().map(|f| f.len()).max().unwrap_or(1);
    for index in 1..candidates {
        // Over all cases: launches of each family's default by the default backends, and of its
        // default and of candidate `index` by the backends running that candidate.
        let mut launches = vec![[0; 3]; families.len()];
        for (case, (input, cout, read)) in cases.into_iter().enumerate() {
            let conv = conv(input, cout, read, Activation::Relu);
            let inputs = parity::conv_inputs(&conv, 300 + case as u64);
            let mut default = new(TilePolicy::Default);
            let mut other = new(TilePolicy::Candidate(index));
            let expected = parity::conv_outputs(&mut default, &conv, &inputs);
            let got = parity::conv_outputs(&mut other, &conv, &inputs);
            let context = format!("{input:?} -> {cout}, {read:?}, candidate {index}");
            parity::assert_same_bits(&got, &expected, &context);
            for (count, family) in launches.iter_mut().zip(families) {
                let chosen = family[index.min(family.len() - 1)];
                count[0] += default.device().launches(family[0]);
                count[1] += other.device().launches(family[0]);
                count[2] += other.device().launches(chosen);
            }
        }
        for (count, family) in launches.iter().zip(families) {
            let context = format!("{family:?}, candidate {index}: launches {count:?}");
            assert!(count[0] > 0 && count[1] == 0 && count[2] > 0, "{context}");
        }
    }
}
