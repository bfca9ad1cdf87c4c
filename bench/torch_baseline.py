#!/usr/bin/env python3
"""The reference autoencoder in PyTorch, timed like `whorl bench`: the training step (forward,
MSE, backward, RMSprop with Keras's epsilon inside the square root, approximated by PyTorch's
RMSprop with eps=1e-7 outside it, which costs the same) and inference, NHWC (channels_last),
float32, cudnn.benchmark on; on the GPU with TF32 not allowed, allowed, and the forward pass
and loss under BF16 autocast. On the GPU in FP32 and TF32 it also times cuDNN on each
convolution pass that `whorl bench` times (forward, backward-data, backward-filter), at the
same shapes and under the same names, upsampled inputs stored at full size as PyTorch runs
them. Writes the same JSON fields as `whorl bench --json`, so `whorl compare` prints the
ratios, for the whole step and pass by pass:

    python3 bench/torch_baseline.py --device cuda --json torch.json
    whorl bench --device cuda --precision fp32 --json whorl.json
    whorl compare whorl.json torch.json

(torch-tf32.json and torch-bf16.json beside it, for whorl's --precision tf32 and bf16.)
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn

from baseline import conv_pass_row, conv_passes, median_seconds, print_and_write, report


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


def cuda_event_timer(call):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    call()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


def conv_pass_rows(device, batch, size, repeats, timer):
    """cuDNN's time for each convolution pass of `conv_passes`, as rows of the report, in the
    precision the caller allowed: the forward pass with its bias, backward-data alone, the
    kernel and bias gradients together (as `whorl bench` times them)."""
    rows = []
    for conv_pass in conv_passes(batch, size):
        side, cin, cout = conv_pass["side"], conv_pass["cin"], conv_pass["cout"]
        x = torch.rand(batch, cin, side, side, device=device).to(memory_format=torch.channels_last)
        w = (torch.rand(cout, cin, 3, 3, device=device) - 0.5).to(memory_format=torch.channels_last)
        b = torch.zeros(cout, device=device)
        dy = torch.rand(batch, cout, side, side, device=device).to(memory_format=torch.channels_last)
        wanted = {"forward": None, "backward-data": [True, False, False],
                  "backward-filter": [False, True, True]}[conv_pass["pass"]]

        def call():
            if wanted is None:
                return F.conv2d(x, w, b, padding=1)
            return torch.ops.aten.convolution_backward(
                dy, x, w, [cout], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, wanted)

        rows.append(conv_pass_row(conv_pass, median_seconds(call, repeats, timer)))
        del x, w, b, dy
    return rows


def measure(device, batch, size, repeats, precision):
    """The training step and inference in `precision`: fp32, tf32 (TF32 allowed in
    convolutions and matrix products) or bf16 (the forward pass and loss under BF16 autocast,
    float32 weights and optimizer, as a framework's mixed precision runs them)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(13)
    net = model().to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    images = torch.rand(batch, 1, size, size, device=device).to(memory_format=torch.channels_last)

    def train():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.mean((net(images) - images) ** 2)
        loss.backward()
        optimizer.step()

    def infer():
        with torch.no_grad(), autocast:
            net(images)

    timer = cuda_event_timer if device.type == "cuda" else None
    train_s = median_seconds(train, repeats, timer)
    infer_s = median_seconds(infer, repeats, timer)
    passes = device.type == "cuda" and precision in ("fp32", "tf32")
    kernels = conv_pass_rows(device, batch, size, repeats, timer) if passes else []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    framework = f"pytorch {torch.__version__}" + ("" if precision == "fp32" else f" {precision.upper()}")
    return report(framework, name, batch, size, repeats, train_s, infer_s, precision, kernels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="write the FP32 report here (on a GPU the TF32 and BF16 "
                        "ones beside it, -tf32.json and -bf16.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    precisions = ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32"]
    reports = [measure(device, args.batch_size, args.size, args.repeats, p) for p in precisions]
    print_and_write(reports, args.json)


if __name__ == "__main__":
    main()
