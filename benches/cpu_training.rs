//! CPU training and inference throughput of the reference model at 224x224, batch 8 and 32.
//! Run with `cargo bench --bench cpu_training`; set RAYON_NUM_THREADS to pin the thread count.
//! "Effective" GFLOP/s count 3.79 GFLOP per image forward and three times that per training
//! step, the arithmetic of a plain implementation.

use whorl::backend::Backend;
use whorl::backend::cpu::CpuBackend;
use whorl::bench::{measure, model_forward_flops};
use whorl::model::Architecture;

fn main() -> Result<(), whorl::Error> {
    let size = 224;
    let forward_flops = model_forward_flops(&Architecture::reference(), size)?;
    println!("backend: {}", CpuBackend::new().name());
    println!(
        "| batch | train images/s | train effective GFLOP/s | inference images/s | inference effective GFLOP/s |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for batch in [8, 32] {
        let t = measure(CpuBackend::new(), batch, size, 3)?;
        let train = t.train_images_per_second();
        let infer = t.inference_images_per_second();
        println!(
            "| {batch} | {train:.1} | {:.0} | {infer:.1} | {:.0} |",
            train * 3.0 * forward_flops / 1e9,
            infer * forward_flops / 1e9
        );
    }
    Ok(())
}
