"""benchmarks/generate_overhead.py runs on the stand-in and prints its ratios (the figures are its job)."""

import importlib.util
import re

from conftest import REPO

import helpers


def test_prints_wall_and_cpu_ratios_and_the_probe_cost(tiny_dir, capsys):
    spec = importlib.util.spec_from_file_location("generate_overhead", REPO / "benchmarks" / "generate_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.main(["--repeats", "2", "--steps", "2"])  # also asserts the two images are identical
    finally:
        helpers.release_current_pipeline()
    printed = capsys.readouterr().out
    assert re.search(r"wall time: raw diffusers +[\d.]+ ms, helpers.generate +[\d.]+ ms, ratio [\d.]+", printed)
    assert re.search(r"CPU time: .* ratio [\d.]+", printed)
    assert re.search(r"PeakMemory probe \((kernel VmHWM|sampling thread)\): +[\d.]+ us", printed)
