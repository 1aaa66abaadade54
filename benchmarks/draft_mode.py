"""Draft mode's levers measured: seconds per image and fidelity against the full image.

    python benchmarks/draft_mode.py            # the stand-in on this machine (CPU or GPU)
    python benchmarks/draft_mode.py --check    # quick: 2 repeats, nothing written (the tests run it)

The full image is the studio's recipe at --steps (28: SD3.5 Large's) and --size; each lever
(fewer steps, a smaller image, both: `helpers.studio.draft.draft_settings`) renders the same prompt
and seed, is timed (median of --repeats) and compared with the full image, upscaled to its size
(PIL bicubic), by PSNR and SSIM (scikit-image). On the stand-in's random weights fidelity says little
about the trained model's images: read it as "how far the lever moves the picture", not as quality.
Writes benchmarks/results/draft_mode/<device>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPT = "a lighthouse on a cliff at sunset, oil painting"


def levers(full: dict) -> dict[str, dict]:
    """name -> settings: the full recipe, each lever alone, and the draft (both)."""
    from helpers.studio import draft

    both = draft.draft_settings(full, size_fraction=0.75)
    return {"full": full,
            "fewer steps (the default draft)": draft.draft_settings(full),
            "smaller image (3/4 side)": dict(full, height=both["height"], width=both["width"]),
            "both": both}


def fidelity(image, reference) -> dict:
    """PSNR (dB) and SSIM of `image`, upscaled to `reference`'s size, against `reference`."""
    import numpy as np
    from PIL import Image
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = np.asarray(reference.convert("RGB"))
    b = np.asarray(image.convert("RGB").resize(reference.size, Image.BICUBIC))
    if np.array_equal(a, b):
        return {"psnr_db": float("inf"), "ssim": 1.0}
    return {"psnr_db": float(peak_signal_noise_ratio(a, b, data_range=255)),
            "ssim": float(structural_similarity(a, b, channel_axis=2, data_range=255))}


def measure(pipe, steps: int, size: int, repeats: int) -> list[dict]:
    import helpers

    full = dict(prompt=PROMPT, negative_prompt="", guidance_scale=3.5, num_inference_steps=steps, seed=7,
                height=size, width=size)
    rows, reference = [], None
    for name, settings in levers(full).items():
        arguments = {k: v for k, v in settings.items() if k != "prompt"}
        helpers.generate(pipe, settings["prompt"], **dict(arguments, num_inference_steps=1))  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = helpers.generate(pipe, settings["prompt"], **arguments)
            times.append(time.perf_counter() - started)
        reference = reference or result.image
        row = {"lever": name, "steps": settings["num_inference_steps"], "size": settings["height"],
               "s_per_image": statistics.median(times), **fidelity(result.image, reference)}
        rows.append(row)
    for row in rows:
        row["speedup"] = rows[0]["s_per_image"] / row["s_per_image"]
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Draft mode on {meta['device']} ({meta['model']})", "",
             "Fidelity against the full image (upscaled, PSNR/SSIM by scikit-image); on random weights it says "
             "little about the trained model's images.", "",
             "| lever | steps | size | s / image | speed-up | PSNR dB | SSIM |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['lever']} | {r['steps']} | {r['size']} | {r['s_per_image']:.3f} | {r['speedup']:.2f}x | "
                     f"{r['psnr_db']:.1f} | {r['ssim']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--size", type=int, default=None, help="pixels (default: 128 on the stand-in, else 1024)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="2 repeats, print only")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "draft_mode")
    args = parser.parse_args(argv)
    import helpers
    from helpers.output_folders import write_atomically

    pipe = helpers.load_pipeline("tiny")
    pipe.set_progress_bar_config(disable=True)
    size = args.size or (128 if pipe.load_info.plan.stand_in else 1024)
    rows = measure(pipe, args.steps, size, 2 if args.check else args.repeats)
    meta = {"device": pipe.load_info.plan.device, "model": "stand-in" if pipe.load_info.plan.stand_in else "real",
            "date": time.strftime("%Y-%m-%d", time.gmtime())}
    print(markdown(rows, meta))
    if not args.check:
        args.output.mkdir(parents=True, exist_ok=True)
        stem = args.output / f"{meta['model']}-{meta['device']}"
        write_atomically(stem.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows}, indent=2), overwrite=True)
        write_atomically(stem.with_suffix(".md"), markdown(rows, meta), overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
