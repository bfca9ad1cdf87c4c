//! CPU training and inference throughput of the reference model at 224x224, batch 8 and 32,
//! with each Winograd tile (`--winograd-tile` 2x2 and 4x4). Run with
//! `cargo bench --bench cpu_training`; set RAYON_NUM_THREADS to pin the thread count.
//! "Effective" GFLOP/s count the plain arithmetic of the model (11.33 GFLOP per training image,
//! 3.79 forward), whatever shortcut the engine takes.

use whorl::backend::cpu::CpuBackend;
use whorl::backend::{Backend, WinogradTile};
use whorl::bench::{model_flops, throughput};
use whorl::model::Architecture;

fn main() -> Result<(), whorl::Error> {
    let size = 224;
    let (train_flops, forward_flops) = model_flops(&Architecture::reference(), size)?;
    println!("backend: {}", CpuBackend::new().name());
    println!(
        "| Winograd tile | batch | train images/s | train effective GFLOP/s | inference images/s | inference effective GFLOP/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for tile in [WinogradTile::TwoByTwo, WinogradTile::FourByFour] {
        for batch in [8, 32] {
            let engine = CpuBackend::new().with_winograd_tile(tile);
            let (train, inference) = throughput(engine, batch, size, 3)?;
            let (train, infer) = (batch as f64 / train, batch as f64 / inference);
            println!(
                "| {} | {batch} | {train:.1} | {:.0} | {infer:.1} | {:.0} |",
                tile.name(),
                train * train_flops / 1e9,
                infer * forward_flops / 1e9
            );
        }
    }
    Ok(())
}
