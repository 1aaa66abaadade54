"""benchmarks/loading_plans.py on CPU with the stand-in, and its full-size configs' sizes."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TESTS

SCRIPT = REPO / "benchmarks" / "loading_plans.py"


def load_script():
    spec = importlib.util.spec_from_file_location("loading_plans_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args):
    # No subprocess time limit: on a slow CI a limit here failed a working script (300 s once was not
    # enough); a real hang is caught by pytest-timeout's limit for tests/benchmarks (tests/conftest.py).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS / "kernel_site"), str(REPO)]))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_cpu_run_writes_json_and_markdown(tiny_dir, tmp_path):
    """The script's own job: its rows run and land in JSON and Markdown. Every plan's measurement on
    the stand-in is notebook 02's job (tests/notebooks/test_notebook_02_loading_plans.py) and the
    per-process GPU-check path is `gpu_check --smoke`'s: here one plan that runs and one that cannot."""
    done = run("--output", str(tmp_path), "--steps", "2", "--plans", "NF4 with NF4 T5", "NF4 + model CPU offload")
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "loading_plans.json").read_text())
    rows = {r["plan"]: r for r in data["rows"]}
    assert list(rows) == ["NF4 with NF4 T5", "NF4 + model CPU offload"]
    assert data["meta"]["model"].startswith("offline stand-in") and data["meta"]["steps"] == 2
    assert rows["NF4 + model CPU offload"]["status"] == "not applicable: no GPU"
    row = rows["NF4 with NF4 T5"]
    assert row["status"] == "ok", row
    assert row["s_per_image"] > 0 and row["peak_bytes"] > 0
    table = (tmp_path / "loading_plans.md").read_text()
    assert "| NF4 with NF4 T5 | ok |" in table
    assert "s / image" in done.stdout


def test_random_weights_is_skipped_without_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the mode would really run")
    done = run("--random-weights", "large", "--output", str(tmp_path))
    assert done.returncode == 0 and "skipped" in done.stdout
    assert not (tmp_path / "loading_plans.json").exists()


# Medium's config (the one other projects use too) counts 2.24 B in diffusers; "2.5 B" is rounded.
@pytest.mark.parametrize("family, billions, tolerance", [("large", 8.1, 0.05), ("medium", 2.5, 0.15)])
def test_random_weight_transformer_matches_published_size(family, billions, tolerance):
    script = load_script()
    with torch.device("meta"):  # shapes only: no memory
        model = script.build_component("transformer", family)
    count = sum(p.numel() for p in model.parameters()) / 1e9
    assert abs(count - billions) / billions < tolerance, count


@pytest.mark.parametrize("name, billions", [("text_encoder", 0.12), ("text_encoder_2", 0.69), ("text_encoder_3", 4.76), ("vae", 0.08)])
def test_random_weight_encoders_match_published_size(name, billions):
    script = load_script()
    with torch.device("meta"):
        model = script.build_component(name)
    count = sum(p.numel() for p in model.parameters()) / 1e9
    assert abs(count - billions) / billions < 0.1, count


class _Saved:
    """Stands in for a built component: save_pretrained writes a small file."""

    def __init__(self, name):
        self.name = name

    def save_pretrained(self, folder):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")


def test_an_interrupted_random_weight_build_is_never_reused(tiny_dir, tmp_path, monkeypatch):
    script = load_script()

    def interrupted(name, family):
        if name == "text_encoder_3":
            raise KeyboardInterrupt
        return _Saved(name)

    monkeypatch.setattr(script, "build_component", interrupted)
    folder = tmp_path / "large"
    with pytest.raises(KeyboardInterrupt):
        script.save_random_pipeline(folder, "large", device="cpu")
    assert not (folder / "model_index.json").exists()  # not mistaken for a finished build
    monkeypatch.setattr(script, "build_component", lambda name, family: _Saved(name))
    assert script.save_random_pipeline(folder, "large", device="cpu") == folder
    assert (folder / "model_index.json").is_file() and (folder / "text_encoder_3" / "config.json").is_file()
    assert not folder.with_name("large.partial").exists()


def test_working_memory_benchmark_says_it_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the benchmark would really run")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "working_memory.py")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "skipped" in done.stdout
