"""What the framework baselines share: the median of timed calls and the report, written with the
same JSON fields as `whorl bench --json` (no per-kernel rows) so `whorl compare` reads it."""
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


def report(framework, device, batch, size, repeats, train_s, infer_s):
    return {
        "framework": framework,
        "device": device,
        "batch_size": batch,
        "size": size,
        "repeats": repeats,
        "train_step_ms": 1e3 * train_s,
        "train_images_per_s": batch / train_s,
        "inference_ms": 1e3 * infer_s,
        "inference_images_per_s": batch / infer_s,
        "kernels": [],
    }


def print_and_write(reports, path):
    """Prints one line per report; writes the first to `path` and any second (TF32) beside it,
    as PATH-tf32.json."""
    for r in reports:
        print(f"| {r['framework']} | {r['device']} | batch {r['batch_size']} | "
              f"train {r['train_images_per_s']:.1f} images/s | "
              f"inference {r['inference_images_per_s']:.1f} images/s |")
    if path:
        with open(path, "w") as f:
            json.dump(reports[0], f, indent=2)
        if len(reports) > 1:
            with open(path.replace(".json", "-tf32.json"), "w") as f:
                json.dump(reports[1], f, indent=2)
