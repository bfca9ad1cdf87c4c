"""What the framework baselines share: the median of timed calls, the convolution passes that
`whorl bench` times, and the report, written with the same JSON fields as `whorl bench --json`
(its per-pass rows named as whorl's) so `whorl compare` reads it."""
import json
import statistics
import time


def median_seconds(step, repeats, timer=None):
    """Median seconds of `repeats` calls of `step` after one warm-up; `timer(step)` times one call
    (default: the wall clock around it)."""
    def wall_clock(call):
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    timer = timer or wall_clock
    timer(step)
    return statistics.median(timer(step) for _ in range(repeats))


# The model's convolutions as `whorl bench` names them: input and output channels, the side of
# the grid they compute on as a fraction of the image's, and whether their input is the
# upsampled output of the layer before (a framework convolves that tensor, stored at full size;
# whorl reads the source and never stores it).
CONVOLUTIONS = (
    ("conv1", 1, 32, 1, False),
    ("conv2", 32, 64, 2, False),
    ("conv3", 64, 128, 4, False),
    ("conv4", 128, 128, 4, False),
    ("conv5", 128, 64, 2, True),
    ("conv6", 64, 1, 1, True),
)


def conv_passes(batch, size):
    """Each convolution pass `whorl bench` times, as a framework runs it: forward,
    backward-data (not the first layer's: its input needs no gradient) and backward-filter
    (kernel and bias), over a `batch` x side x side input of `cin` channels."""
    passes = []
    for layer, cin, cout, fraction, upsampled in CONVOLUTIONS:
        for kind in ("forward", "backward-data", "backward-filter"):
            if layer == "conv1" and kind == "backward-data":
                continue
            passes.append({"layer": layer, "pass": kind, "batch": batch, "side": size // fraction,
                           "cin": cin, "cout": cout, "upsampled": upsampled})
    return passes


def conv_pass_row(conv_pass, seconds):
    """A per-kernel row of the report for `conv_pass` (from `conv_passes`) timed at `seconds`,
    with its nominal FLOPs as whorl counts them (2 x output pixels x 9 x cin x cout) and the
    bytes of the tensors it reads and writes once (its upsampled input at full size)."""
    batch, side, cin, cout = (conv_pass[k] for k in ("batch", "side", "cin", "cout"))
    pixels = batch * side * side
    flops = 2.0 * pixels * 9 * cin * cout
    weights = 9 * cin * cout + cout
    floats = pixels * cin + pixels * cout + weights
    shape = f"{batch}x{side}x{side}x{cin} -> {cout}"
    if conv_pass["upsampled"]:
        shape += ", the upsampled input stored"
    return {
        "name": f"{conv_pass['layer']} {conv_pass['pass']}",
        "shape": shape,
        "median_ms": 1e3 * seconds,
        "gflops": flops / seconds / 1e9,
        "executed_gflops": flops / seconds / 1e9,
        "gbs": 4 * floats / seconds / 1e9,
        "work": {"flops": flops, "executed_flops": flops, "bytes": 4.0 * floats},
        "percent_of_peak": None,
    }


def report(framework, device, batch, size, repeats, train_s, infer_s, precision="fp32",
           kernels=()):
    return {
        "framework": framework,
        "precision": precision,
        "device": device,
        "batch_size": batch,
        "size": size,
        "repeats": repeats,
        "train_step_ms": 1e3 * train_s,
        "train_images_per_s": batch / train_s,
        "inference_ms": 1e3 * infer_s,
        "inference_images_per_s": batch / infer_s,
        "kernels": list(kernels),
    }


def print_and_write(reports, path):
    """Prints one line per report; writes the first to `path` and each other beside it as
    PATH-SUFFIX.json, SUFFIX its "precision" (e.g. PATH-tf32.json)."""
    for r in reports:
        print(f"| {r['framework']} | {r['device']} | batch {r['batch_size']} | "
              f"train {r['train_images_per_s']:.1f} images/s | "
              f"inference {r['inference_images_per_s']:.1f} images/s |")
    if path:
        for i, r in enumerate(reports):
            target = path if i == 0 else path.replace(".json", f"-{r['precision']}.json")
            with open(target, "w") as f:
                json.dump(r, f, indent=2)
