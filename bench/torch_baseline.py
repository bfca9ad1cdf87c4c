#!/usr/bin/env python3
"""The reference autoencoder in PyTorch, timed like `whorl bench`: the training step (forward,
MSE, backward, RMSprop with Keras's epsilon inside the square root, approximated by PyTorch's
RMSprop with eps=1e-7 outside it, which costs the same) and inference, NHWC (channels_last),
float32, cudnn.benchmark on, with TF32 allowed and not allowed on the GPU. Writes the same JSON
fields as `whorl bench --json` (no per-kernel rows), so `whorl compare` prints the ratios:

    python3 bench/torch_baseline.py --device cuda --json torch.json
    whorl bench --device cuda --json whorl.json
    whorl compare whorl.json torch.json
"""
import argparse
import json
import statistics
import time

import torch
from torch import nn


def model() -> nn.Module:
    def conv(cin, cout, act):
        return [nn.Conv2d(cin, cout, 3, padding=1), act]

    return nn.Sequential(
        *conv(1, 32, nn.ReLU()), nn.MaxPool2d(2),
        *conv(32, 64, nn.ReLU()), nn.MaxPool2d(2),
        *conv(64, 128, nn.ReLU()), *conv(128, 128, nn.ReLU()),
        nn.Upsample(scale_factor=2, mode="nearest"), *conv(128, 64, nn.ReLU()),
        nn.Upsample(scale_factor=2, mode="nearest"), *conv(64, 1, nn.Sigmoid()),
    )


def median_seconds(step, repeats, device):
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            step()
            samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def measure(device, batch, size, repeats, tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(13)
    net = model().to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    images = torch.rand(batch, 1, size, size, device=device).to(memory_format=torch.channels_last)

    def train():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.mean((net(images) - images) ** 2)
        loss.backward()
        optimizer.step()

    def infer():
        with torch.no_grad():
            net(images)

    train_s = median_seconds(train, repeats, device)
    infer_s = median_seconds(infer, repeats, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "framework": f"pytorch {torch.__version__}" + (" TF32" if tf32 and device.type == "cuda" else ""),
        "device": name,
        "batch_size": batch,
        "size": size,
        "repeats": repeats,
        "train_step_ms": 1e3 * train_s,
        "train_images_per_s": batch / train_s,
        "inference_ms": 1e3 * infer_s,
        "inference_images_per_s": batch / infer_s,
        "kernels": [],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="write the FP32 report here (and the TF32 one beside it, -tf32.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    reports = [measure(device, args.batch_size, args.size, args.repeats, tf32=False)]
    if device.type == "cuda":
        reports.append(measure(device, args.batch_size, args.size, args.repeats, tf32=True))
    for report in reports:
        print(f"| {report['framework']} | {report['device']} | batch {report['batch_size']} | "
              f"train {report['train_images_per_s']:.1f} images/s | "
              f"inference {report['inference_images_per_s']:.1f} images/s |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports[0], f, indent=2)
        if len(reports) > 1:
            with open(args.json.replace(".json", "-tf32.json"), "w") as f:
                json.dump(reports[1], f, indent=2)


if __name__ == "__main__":
    main()
