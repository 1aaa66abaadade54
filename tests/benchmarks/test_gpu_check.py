"""benchmarks/gpu_check.py: its --smoke mode runs the GPU check's code path on the CPU stand-in."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TESTS

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SMOKE_PLANS = ["bf16", "NF4", "free Colab T4: the planner's plan", "NF4, pre-quantized reload", "NF4 without T5"]


def load_script():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, shim=True):
    paths = ([str(TESTS / "kernel_site")] if shim else []) + [str(REPO)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_smoke_runs_every_plan_in_its_own_process_and_writes_results(tiny_dir, tmp_path):
    done = run("--smoke", "--output", str(tmp_path), "--scratch", str(tmp_path / "scratch"), "--plans", *SMOKE_PLANS)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    rows = {r["plan"]: r for r in data["rows"]}
    assert list(rows) == SMOKE_PLANS
    assert rows["free Colab T4: the planner's plan"]["status"] == "not applicable: no GPU"
    for name in ("bf16", "NF4", "NF4, pre-quantized reload", "NF4 without T5"):
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["s_per_image"] > 0 and row["load_s"] > 0 and row["host_peak_load_bytes"] > 0
        # The planner's prediction is compared with what was really loaded, component by component.
        assert set(row["predicted_over_measured"]) <= set(row["measured_bytes"])
        assert row["measured_bytes"]["transformer"] > 0
    assert "text_encoder_3" not in rows["NF4 without T5"]["measured_bytes"]
    assert rows["NF4"]["measured_bytes"]["transformer"] < rows["bf16"]["measured_bytes"]["transformer"]
    assert any("byte-identical" in check for check in data["meta"]["checks"]), data["meta"]["checks"]
    table = (tmp_path / "smoke.md").read_text()
    assert "| NF4 without T5 | ok |" in table and "Planner's predicted bytes" in table
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())  # cleaned up


def test_without_a_gpu_the_full_check_says_so_and_exits_cleanly(tmp_path):
    done = run("--output", str(tmp_path), shim=False)
    assert done.returncode == 0 and "needs a CUDA GPU" in done.stdout
    assert not any(tmp_path.iterdir())


def test_unknown_plan_is_refused_before_any_work(tmp_path):
    done = run("--smoke", "--output", str(tmp_path), "--plans", "fp8", shim=False)
    assert done.returncode == 2 and "unknown plan 'fp8'" in done.stderr
    assert not any(tmp_path.iterdir())


def committed_results():
    from helpers.loading.plan_benchmarks import gpu_results

    return [data["path"] for data in gpu_results()]


@pytest.mark.parametrize("path", committed_results(), ids=lambda p: p.stem)
def test_the_planner_predicts_the_bytes_a_real_gpu_loaded(path):
    """Every row a real GPU measured: today's planner must predict each component's bytes within 1%
    (the GPU check recorded the load_pipeline arguments and the bytes really loaded)."""
    import helpers

    rows = [r for r in json.loads(path.read_text())["rows"] if r.get("measured_bytes") and r.get("load_pipeline")]
    assert rows
    for row in rows:
        options = {k: (v == "True" if v in ("True", "False") else v) for k, v in row["load_pipeline"].items()}
        options.pop("fast", None)
        options.pop("transformer", None)  # a saved NF4 transformer: the preset's own quantization
        options["offload"] = "none"  # where the weights live does not change their bytes; this CPU plans "none"
        options["dtype"] = getattr(torch, options.get("dtype", row["dtype"]))
        plan = helpers.plan_loading(**options, stand_in=False, free_bytes=200 * 2**30)
        for component, measured in row["measured_bytes"].items():
            predicted = plan.estimated_bytes[component]
            assert abs(predicted / measured - 1) < 0.01, (row["plan"], component, predicted, measured)


@pytest.mark.parametrize("path", committed_results(), ids=lambda p: p.stem)
def test_the_planner_covers_the_host_memory_a_real_load_took(path):
    """Rows measured in a fresh process: what loading added to the process' resident memory must be
    within the planner's host-RAM figure for that plan, and (without offload) close to it."""
    from helpers.loading.hardware_profiles import HardwareProfile, plan_on
    from helpers.loading.planner import PREQUANTIZED

    meta = json.loads(path.read_text())["meta"]
    gpu = HardwareProfile(meta["device"], "cuda", tuple(int(x) for x in meta["capability"].split(".")),
                          meta["gpu_total_bytes"], meta["host_ram_bytes"], 0)
    rows = [r for r in json.loads(path.read_text())["rows"]
            if r.get("host_before_load_bytes") and r.get("host_peak_load_bytes") and r["status"] == "ok"]
    assert rows
    for row in rows:
        options = {k: (v == "True" if v in ("True", "False") else v) for k, v in row["load_pipeline"].items()}
        options.pop("fast", None)
        if "transformer" in options:
            options["transformer"] = PREQUANTIZED
        options["dtype"] = getattr(torch, options.get("dtype", row["dtype"]))
        plan = plan_on(gpu, **options)
        measured = row["host_peak_load_bytes"] - row["host_before_load_bytes"]
        assert measured <= plan.host_bytes_needed * 1.01, (row["plan"], measured, plan.host_bytes_needed)
        if plan.offload == "none":
            assert plan.host_bytes_needed <= measured * 1.15, (row["plan"], measured, plan.host_bytes_needed)


STAGED = "free Colab T4: staged T5 (NF4), then the planner's plan"


def test_smoke_runs_the_staged_t5_row_on_the_cpu(tiny_dir, tmp_path):
    """Staged T5 on the T4 plan: the encoders' phase is timed and planned, then the image is rendered
    from its embeddings by the T5-less plan (helpers.loading.staged_t5)."""
    done = run("--smoke", "--output", str(tmp_path), "--scratch", str(tmp_path / "scratch"), "--plans", STAGED)
    assert done.returncode == 0, done.stderr[-3000:]
    [row] = json.loads((tmp_path / "smoke.json").read_text())["rows"]
    assert row["status"] == "ok", row
    assert row["encode_s"] > 0 and row["s_per_image"] > 0 and row["image_sha"]
    assert "text_encoder_3" not in row["measured_bytes"]  # T5 is gone before the transformer loads
    assert row["dtype"] == "float16"
    # The encoders' phase as the planner costs it on the real model: CLIP-L, CLIP-G and NF4 T5 in fp16.
    assert 7 * 2**30 < row["encode_allowance_bytes"] < 9 * 2**30
    assert list(load_script().PLANS).index(STAGED) < 4  # among the first rows a short GPU budget measures
