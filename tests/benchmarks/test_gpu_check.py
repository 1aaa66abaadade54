"""benchmarks/gpu_check.py: its --smoke mode runs the GPU check's code path on the CPU stand-in."""

import importlib.util
import json
import os
import subprocess
import sys

import torch
from conftest import REPO, TESTS

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SMOKE_PLANS = ["bf16", "NF4", "free Colab T4: the planner's plan", "NF4, pre-quantized reload", "NF4 without T5",
               "bf16 at 768x768"]


def load_script():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, shim=True, timeout=600):
    paths = ([str(TESTS / "kernel_site")] if shim else []) + [str(REPO)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_smoke_runs_every_plan_in_its_own_process_and_writes_results(tiny_dir, tmp_path):
    done = run("--smoke", "--output", str(tmp_path), "--scratch", str(tmp_path / "scratch"), "--plans", *SMOKE_PLANS)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    rows = {r["plan"]: r for r in data["rows"]}
    assert list(rows) == [name for name in load_script().PLANS if name in SMOKE_PLANS]  # in the table's order
    assert rows["free Colab T4: the planner's plan"]["status"] == "not applicable: no GPU"
    for name in ("bf16", "NF4", "NF4, pre-quantized reload", "NF4 without T5"):
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["s_per_image"] > 0 and row["load_s"] > 0 and row["host_peak_load_bytes"] > 0
        # The planner's prediction is compared with what was really loaded, component by component.
        assert set(row["predicted_over_measured"]) <= set(row["measured_bytes"])
        assert row["measured_bytes"]["transformer"] > 0
    assert "text_encoder_3" not in rows["NF4 without T5"]["measured_bytes"]
    # A row at its own size renders at the run's scale (768 of 1024: 48 of 64 px) and is planned for it.
    small = rows["bf16 at 768x768"]
    assert small["status"] == "ok" and small["size"] == 48 and small["load_pipeline"]["size"] == "48"
    assert small["working_allowance_bytes"] < rows["bf16"]["working_allowance_bytes"]
    assert rows["NF4"]["measured_bytes"]["transformer"] < rows["bf16"]["measured_bytes"]["transformer"]
    assert any("byte-identical" in check for check in data["meta"]["checks"]), data["meta"]["checks"]
    table = (tmp_path / "smoke.md").read_text()
    assert "| NF4 without T5 | ok |" in table and "Planner's predicted bytes" in table
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())  # cleaned up


NEW_ROWS = ["FP8 fast, NF4 T5", "FP8: one transformer forward vs bf16", "FP8 fast + fused QKV (qk-norm kept)",
            "free Colab T4: NF4 T5 + VAE tiling"]


def test_smoke_covers_the_new_rows(tiny_dir, tmp_path):
    """--only runs the chosen rows (adding the NF4 row whose saved transformer one of them loads).
    On a CPU: float8 matmuls need sm_89+, so the FP8 plan says so (printed); the FP8 error row measures
    float8 *weight* storage on the stand-in, and says that is what it measured; the fused-QKV row (no
    float8 on a CPU: not applicable) is shown by tests/loading/test_fused_qkv.py; the T4 rows need a GPU
    to emulate. A compiled row records its first image and the attention kernel SDPA chose."""
    # Compiling the stand-in on a CPU takes minutes when the CPU is shared: a generous limit.
    done = run("--smoke", "--output", str(tmp_path), "--scratch", str(tmp_path / "scratch"), "--only", *NEW_ROWS,
               timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NF4 was added" in done.stdout
    assert "FP8 fast, NF4 T5: not applicable: needs an sm_89+ GPU (float8 matmuls)" in done.stdout
    rows = {r["plan"]: r for r in json.loads((tmp_path / "smoke.json").read_text())["rows"]}
    assert list(rows) == ["NF4", "FP8 fast, NF4 T5", "FP8: one transformer forward vs bf16",
                          "FP8 fast + fused QKV (qk-norm kept)", "free Colab T4: NF4 T5 + VAE tiling"]
    assert rows["FP8 fast + fused QKV (qk-norm kept)"]["status"].startswith("not applicable: needs an sm_89+")
    error = rows["FP8: one transformer forward vs bf16"]
    assert error["status"] == "ok" and "float8 weights only (CPU" in error["quantization"], error
    assert 1e-3 < error["relative_error"] < 0.2 and error["float8_bytes"] < error["bf16_bytes"]
    nf4 = rows["NF4"]
    assert nf4["status"] == "ok" and nf4["warmup_s"] > 0 and "first_image_s" not in nf4
    lo, hi = nf4["s_per_step_range"]
    assert lo <= nf4["s_per_step"] <= hi  # the median step, with its range
    # The kernel SDPA chose after one image, for this transformer's joint attention at this size.
    assert nf4["attention"]["sdpa_choice"] in nf4["attention"]["sdpa_priority"] and "cudnn_version" in nf4["attention"]
    assert nf4["planned_load_bytes"] > 0 and nf4["size"] == 64 and nf4["steps"] == 2
    assert rows["free Colab T4: NF4 T5 + VAE tiling"]["status"] == "not applicable: no GPU"


def test_rows_not_run_keep_their_last_figures_labelled_with_their_date():
    gpu_check = load_script()
    previous = {"meta": {"date": "2026-11-26"}, "rows": [
        {"plan": "bf16", "status": "ok", "s_per_image": 5.37},
        {"plan": "NF4 with NF4 T5 [run 1]", "status": "ok", "s_per_image": 5.68},
        {"plan": "NF4 fast (compiled)", "status": "skipped: time budget (361 s of 295)"}]}
    rows = [{"plan": "FP8 fast, NF4 T5", "status": "ok", "s_per_image": 2.0},
            {"plan": "NF4 fast (compiled)", "status": "skipped: time budget (400 s + about 65 s > 480)"}]
    merged = {r["plan"]: r for r in gpu_check.merge_previous(rows, previous)}
    assert merged["FP8 fast, NF4 T5"]["s_per_image"] == 2.0 and "measured" not in merged["FP8 fast, NF4 T5"]
    assert merged["bf16"] == {"plan": "bf16", "status": "ok", "s_per_image": 5.37, "measured": "2026-11-26"}
    assert merged["NF4 with NF4 T5"]["measured"] == "2026-11-26"
    assert merged["NF4 fast (compiled)"]["status"].startswith("skipped: time budget (400 s")  # never measured
    assert list(merged) == [n for n in gpu_check.PLANS if n in merged]


def test_only_adds_the_nf4_row_a_chosen_row_needs_and_optional_rows_run_only_when_named():
    gpu_check = load_script()
    rows, notes = gpu_check.choose_rows(["NF4, pre-quantized reload"])
    assert rows == ["NF4", "NF4, pre-quantized reload"] and "NF4 was added" in notes[0]
    everything, _ = gpu_check.choose_rows(None)
    assert "bf16 fast, max-autotune" not in everything and everything[:2] == ["FP8 fast, NF4 T5",
                                                                          "Large Turbo, 4 steps, FP8 fast, NF4 T5"]
    assert gpu_check.choose_rows(["bf16 fast, max-autotune"])[0] == ["bf16 fast, max-autotune"]
    # notebook 07's backend rows are rows of the check: selectable, ranked after the plans, GGUF only when named
    backends = [name for name in gpu_check.PLANS if name.startswith("backend: ")]
    assert len(backends) == 8 and "backend: torchao float8" in everything and "backend: GGUF Q4_0" not in everything
    assert gpu_check.choose_rows(["backend: GGUF Q4_0", "backend: bf16"])[0] == ["backend: bf16", "backend: GGUF Q4_0"]
    assert everything.index("backend: bf16") > everything.index("NF4 without T5")


def test_the_default_run_fits_one_device_call_by_its_estimates():
    """The rows a default run starts, by their estimated seconds (BUDGET in gpu_check.py), end within
    the default budget of 420 s with the builds, so the last row (up to 120 s past it) and the install
    fit one 600 s device call; the goal rows, CUDA graphs and the rows the planner was not fitted on
    start, the rest are skipped and say so."""
    gpu_check = load_script()
    rows, _ = gpu_check.choose_rows(None)
    assert gpu_check.DEFAULT_BUDGET_S == 420
    elapsed, started, built = gpu_check.BUILD_EST_S["large"], [], {"large"}
    for name in rows:
        family = gpu_check.PLANS[name].get("family", "large")
        estimate = gpu_check.PLANS[name].get("est_s", gpu_check.DEFAULT_EST_S) + (
            0 if family in built else gpu_check.BUILD_EST_S[family])
        if elapsed + estimate <= gpu_check.DEFAULT_BUDGET_S:
            elapsed += estimate
            started.append(name)
            built.add(family)
    assert started[:6] == ["FP8 fast, NF4 T5", "Large Turbo, 4 steps, FP8 fast, NF4 T5",
                           "FP8: one transformer forward vs bf16", "FP8 fast + CUDA graphs (reduce-overhead)",
                           "bf16 at 1536x1536", "Medium bf16"]
    assert elapsed <= gpu_check.DEFAULT_BUDGET_S and "bf16" not in started


def test_a_backend_row_is_measured_by_backend_rows(tmp_path, monkeypatch, tiny_dir):
    """A PLANS entry with a "backend" key goes to benchmarks/backend_rows.py's measure_backend_row
    (helper "backends" writes it); here a stand-in module answers in its place."""
    gpu_check = load_script()
    (tmp_path / "backend_rows.py").write_text(
        "def measure_backend_row(name, source, args):\n"
        "    return {'s_per_image': 1.5, 'source': str(source), 'steps': args.steps}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "backend_rows", raising=False)
    monkeypatch.setitem(gpu_check.PLANS, "backend: test", dict(backend="test"))
    monkeypatch.setenv("SD35_TINY_DIR", str(tiny_dir))

    class Args:
        steps = 2

    row = gpu_check.measure("backend: test", prompt="p", steps=2, size=64, saved=tmp_path / "saved",
                            flop_per_image=None, peak_flops=None, args=Args())
    assert row == {"plan": "backend: test", "status": "ok", "s_per_image": 1.5, "source": str(tiny_dir), "steps": 2}


def test_goal_checks_say_met_or_not_met():
    gpu_check = load_script()
    gib = 1024**3
    checks = gpu_check.goal_checks([
        {"plan": "FP8 fast, NF4 T5", "status": "ok", "s_per_image": 2.4, "first_image_s": 30.0,
         "gpu_after_load_bytes": 13.4 * gib, "peak_allocated_bytes": 15.2 * gib},
        {"plan": "Large Turbo, 4 steps, FP8 fast, NF4 T5", "status": "ok", "s_per_image": 0.8, "first_image_s": 20.0,
         "steps": 4},
        {"plan": "Medium bf16 fast (compiled)", "status": "ok", "s_per_image": 1.2, "first_image_s": 20.0, "size": 768},
        {"plan": "bf16", "status": "ok", "s_per_image": 5.4, "warmup_s": 2.0}])
    assert checks[0] == "Large Turbo, 4 steps: 0.80 s/image (goal < 1: met)"
    assert checks[1].startswith("FP8 fast, NF4 T5: 2.40 s/image (goal <= 2.5: met)") and "25: not met" in checks[1]
    assert "peak 15.20 GiB allocated (goal <= 15 GiB: not met)" in checks[2] and len(checks) == 3  # not at 768x768


def test_results_and_checks_are_written_after_every_row(tmp_path, monkeypatch, tiny_dir):
    """A run cut short (the device call's limit) keeps every finished row and its goal checks: the
    files are rewritten after each row, checks included."""
    gpu_check = load_script()
    seen = []

    def fake_child(name, args, env, timeout):
        if seen:  # the first row's files must already hold its row and its goal check
            data = json.loads((tmp_path / "smoke.json").read_text())
            seen.append((data["rows"][0]["plan"], data["meta"]["checks"]))
        else:
            seen.append(name)
        return {"plan": name, "status": "ok", "s_per_image": 2.0, "first_image_s": 20.0}

    monkeypatch.setattr(gpu_check, "run_child", fake_child)
    monkeypatch.setenv("SD35_TINY_DIR", str(tiny_dir))
    assert gpu_check.main(["--smoke", "--output", str(tmp_path), "--scratch", str(tmp_path / "s"), "--steps", "28",
                           "--size", "1024", "--only", "NF4 fast (compiled)", "bf16 fast (compiled)"]) == 0
    assert seen[1][0] == "NF4 fast (compiled)" and seen[1][1][0].startswith("NF4 fast (compiled): 2.00 s/image (goal")


def test_without_a_gpu_the_full_check_says_so_and_exits_cleanly(tmp_path):
    done = run("--output", str(tmp_path), shim=False)
    assert done.returncode == 0 and "needs a CUDA GPU" in done.stdout
    assert not any(tmp_path.iterdir())


def test_unknown_plan_is_refused_before_any_work(tmp_path):
    done = run("--smoke", "--output", str(tmp_path), "--plans", "fp8", shim=False)
    assert done.returncode == 2 and "unknown plan 'fp8'" in done.stderr
    assert not any(tmp_path.iterdir())


def committed_results():
    """The committed GPU results; fails, never collects nothing, when they are gone."""
    from helpers.loading.plan_benchmarks import gpu_results

    paths = [data["path"] for data in gpu_results()]
    assert paths, "no committed GPU results in benchmarks/results: run `make gpu-check` on a GPU and commit them"
    return paths


# The host RAM a real load took is held to the planner in tests/loading/test_planner_measurements.py.
def test_the_planner_predicts_the_bytes_a_real_gpu_loaded():
    """Every row a real GPU measured: today's planner must predict each component's bytes within 1%
    (the GPU check recorded the load_pipeline arguments and the bytes really loaded)."""
    import helpers
    from helpers.loading.load import fp8_transformer_bytes
    from helpers.loading.presets import resolve_preset

    rows = [(path, r) for path in committed_results() for r in json.loads(path.read_text())["rows"]
            if r.get("measured_bytes") and r.get("load_pipeline")]
    assert rows
    for path, row in rows:
        options = {k: (v == "True" if v in ("True", "False") else int(v) if str(v).isdigit() else v)
                   for k, v in row["load_pipeline"].items()}
        fast = options.pop("fast", None)
        options.pop("transformer", None)  # a saved NF4 transformer: the preset's own quantization
        options["offload"] = "none"  # where the weights live does not change their bytes; this CPU plans "none"
        options["dtype"] = getattr(torch, options.get("dtype", row["dtype"]))
        plan = helpers.plan_loading(**options, stand_in=False, free_bytes=200 * 2**30)
        if fast == "fp8":  # float8 linear layers, with the scales this GPU generation takes
            capability = tuple(int(x) for x in json.loads(path.read_text())["meta"]["capability"].split("."))
            plan.estimated_bytes["transformer"] = fp8_transformer_bytes(plan, resolve_preset(options["model"]), capability)
        for component, measured in row["measured_bytes"].items():
            predicted = plan.estimated_bytes[component]
            assert abs(predicted / measured - 1) < 0.01, (row["plan"], component, predicted, measured)


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
    assert list(load_script().PLANS).index(STAGED) < 15  # never measured: ranked before the reference rows
