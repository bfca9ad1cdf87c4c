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


def report(framework, device, batch, size, repeats, train_s, infer_s, precision="fp32"):
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
        "kernels": [],
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
