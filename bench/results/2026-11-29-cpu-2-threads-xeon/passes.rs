//! Times one pass of one of the model's convolutions on the CPU backend at batch 32, 224x224:
//! `passes fwd|data|filter|both|pooled|pooledfilter|poolbwd INDEX [CALLS]` (INDEX 0-5:
//! conv1-conv6; `both`: the whole backward pass as training runs it, with a ReLU before the
//! convolution; `pooled` and `pooledfilter`: conv1 and pool1 as one pass, forward and kernel
//! gradient, as training runs them (INDEX 0); `poolbwd`: the max pooling of the convolution's
//! output, backward, with the ReLU derivative (INDEX 1: pool2); CALLS after one
//! warm-up, 15 by default; the inputs rotate over three copies, as `whorl bench` rotates
//! them), and prints the median. Threads follow RAYON_NUM_THREADS. To run it, copy it to
//! examples/passes.rs and `cargo run --release --example passes -- filter 4`.
use whorl::backend::Backend;
use whorl::backend::cpu::CpuBackend;
use whorl::graph::convolutions;
use whorl::model::Architecture;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pass = args[1].as_str();
    let index: usize = args[2].parse().unwrap();
    let calls: usize = args.get(3).map_or(15, |s| s.parse().unwrap());
    let convs = convolutions(&Architecture::reference(), 224, 224, 32).unwrap();
    let conv = &convs[index];
    let mut backend = CpuBackend::new();
    backend.plan(&convs).unwrap();
    let filled = |len: usize, seed: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    };
    let params = filled(conv.slot.bias.end, 7);
    let xs: Vec<Vec<f32>> = (0..3).map(|r| filled(conv.input.len(), r)).collect();
    let dzs: Vec<Vec<f32>> = (0..3).map(|r| filled(conv.output().len(), r + 3)).collect();
    let mut grads = vec![0.0; conv.slot.bias.end];
    let mut dx = vec![0.0; conv.input.len()];
    let mut y = vec![0.0; conv.output().len()];
    let mut pooled = vec![0.0; conv.output().len() / 4];
    let d_pooleds: Vec<Vec<f32>> = (0..3)
        .map(|r| filled(conv.output().len() / 4, r + 5))
        .collect();
    let mut times = Vec::new();
    for i in 0..=calls {
        let start = std::time::Instant::now();
        let (x, dz) = (&xs[i % 3], &dzs[i % 3]);
        match pass {
            "fwd" => backend.conv2d_forward(conv, x, &params, &mut y),
            "data" => backend.conv2d_backward_data(conv, dz, &params, &mut dx),
            "filter" => backend.conv2d_backward_filter(conv, x, dz, &mut grads),
            "both" => backend.conv2d_backward(
                conv,
                (x, Some(whorl::model::Activation::Relu)),
                dz,
                &params,
                &mut grads,
                &mut dx,
            ),
            "pooled" => backend.conv2d_pooled_forward(conv, x, &params, &mut pooled),
            "pooledfilter" => backend.conv2d_pooled_backward_filter(
                conv,
                x,
                &params,
                &d_pooleds[i % 3],
                &mut grads,
            ),
            "poolbwd" => backend.maxpool2_backward(
                conv.output(),
                (&dzs[i % 3], Some(whorl::model::Activation::Relu)),
                &d_pooleds[i % 3],
                &mut y,
            ),
            _ => panic!("pass: fwd, data, filter, both, pooled, pooledfilter or poolbwd"),
        }
        .unwrap();
        if i > 0 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{pass} conv{}: median {:.2} ms (min {:.2}, max {:.2})",
        index + 1,
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
    std::hint::black_box((&grads, &dx, &y, &pooled));
}
