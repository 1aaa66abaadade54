"""benchmarks/draft_mode.py: each draft lever timed and compared with the full image (PSNR/SSIM)."""

import importlib.util

import numpy as np
from conftest import REPO
from PIL import Image


def load_script():
    spec = importlib.util.spec_from_file_location("draft_mode", REPO / "benchmarks" / "draft_mode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fidelity_is_scikit_images_psnr_and_ssim_after_upscaling():
    script = load_script()
    rng = np.random.default_rng(0)
    reference = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert script.fidelity(reference, reference) == {"psnr_db": float("inf"), "ssim": 1.0}
    noisy = Image.fromarray(np.clip(np.asarray(reference, int) + rng.integers(-8, 9, (64, 64, 3)), 0, 255).astype(np.uint8))
    close, far = script.fidelity(noisy, reference), script.fidelity(reference.resize((32, 32)), reference)
    assert 25 < close["psnr_db"] < 40 and far["psnr_db"] < close["psnr_db"] and far["ssim"] < close["ssim"] < 1


def test_levers_run_on_the_stand_in(tiny_pipe):
    rows = load_script().measure(tiny_pipe, steps=8, size=64, repeats=1)
    assert [r["lever"] for r in rows] == ["full", "fewer steps (the default draft)", "smaller image (3/4 side)", "both"]
    assert [r["steps"] for r in rows] == [8, 4, 8, 4] and [r["size"] for r in rows] == [64, 64, 48, 48]
    assert rows[0]["ssim"] == 1.0 and rows[0]["speedup"] == 1.0
    assert all(r["s_per_image"] > 0 and r["ssim"] < 1 for r in rows[1:])
