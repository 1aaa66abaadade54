"""How much the studio adds on top of a plain diffusers call, on the offline stand-in.

Prints: median seconds of the raw pipeline call, of a studio generation with the live preview
(background thread, per-step callback, predicted clean latents x0_hat, latent->RGB preview, PNG encode for
the widget), their
ratio, and the latency of a cached revisit (slider moved back to a rendered value).
Run: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/studio_overhead.py [--size 256 --steps 8 --repeats 7]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from helpers.generation.latent_preview import latent_preview, predicted_clean_latents  # noqa: E402
from helpers.loading.load import load_pipeline  # noqa: E402
from helpers.studio.view import Studio, _png_bytes  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (multiple of 16)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = load_pipeline("tiny")
    pipe.set_progress_bar_config(disable=True)
    prompt = "a capybara wearing a suit holding a sign that reads hello world"
    studio = Studio(pipe, prompt=prompt, save_dir="/nonexistent-never-written")
    studio.steps.value = args.steps
    studio.size.options = [(f"{args.size}x{args.size}", (args.size, args.size))]
    studio.size.value = (args.size, args.size)
    embeddings = studio.prompts.get(prompt, "")  # both sides skip the text encoders

    raw, with_studio, revisit = [], [], []
    for i in range(args.repeats):
        started = time.perf_counter()
        pipe(**embeddings.as_pipeline_kwargs(), guidance_scale=3.5, num_inference_steps=args.steps,
             height=args.size, width=args.size, generator=torch.Generator("cpu").manual_seed(i))
        raw.append(time.perf_counter() - started)

        studio.seed.value = i
        started = time.perf_counter()
        assert studio.request() == "started"
        studio.wait_idle(600)
        with_studio.append(time.perf_counter() - started)
        assert studio.last_error is None, studio.message.value

    studio.seed.value = 0
    for _ in range(args.repeats):
        started = time.perf_counter()
        assert studio.request() == "cached"
        revisit.append(time.perf_counter() - started)

    r, s, c = (statistics.median(x) for x in (raw, with_studio, revisit))
    print(f"stand-in, {args.size}x{args.size}, {args.steps} steps, median of {args.repeats}")
    print(f"raw diffusers call:             {r * 1000:8.1f} ms")
    print(f"studio generation with preview: {s * 1000:8.1f} ms  (ratio {s / r:.3f})")
    print(f"per-step studio overhead:       {(s - r) / args.steps * 1000:8.2f} ms")
    for side in (args.size, 1024):  # the preview alone, at this size and at SD3.5's 1024x1024
        latents = torch.randn(1, 16, side // 8, side // 8)
        started = time.perf_counter()
        for _ in range(20):
            _png_bytes(latent_preview(latents), "JPEG")
        print(f"preview of one step, {side}x{side}: {(time.perf_counter() - started) / 20 * 1000:8.2f} ms")
        following = torch.randn(1, 16, side // 8, side // 8)
        started = time.perf_counter()
        for _ in range(20):
            predicted_clean_latents(latents, following, 0.75, 0.72)
        print(f"x0_hat of one step, {side}x{side}: {(time.perf_counter() - started) / 20 * 1000:8.2f} ms")
    print(f"cached revisit:                 {c * 1000:8.2f} ms")


if __name__ == "__main__":
    main()
