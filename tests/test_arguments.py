"""Small functions given wrong values: one clear error naming the argument, never a wrong answer.

(helpers.arguments itself, and the measuring, statistics and subprocess helpers that use it.)"""

import math

import pytest
import torch

from helpers import measuring
from helpers.loading import arguments
from helpers.studies.stats import smallest_possible_p_value
from tools.subprocess_probe import measure_in_subprocess


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_format_bytes_refuses_non_finite_sizes(value):
    with pytest.raises(ValueError, match="format_bytes needs a finite number of bytes"):
        measuring.format_bytes(value)


@pytest.mark.parametrize("value", ["x", "3 GiB", [1], True])
def test_format_bytes_refuses_what_is_not_a_number(value):
    with pytest.raises(TypeError, match="format_bytes needs a number of bytes"):
        measuring.format_bytes(value)


def test_format_bytes_still_formats_numbers():
    assert measuring.format_bytes(1.5 * measuring.GiB) == "1.50 GiB"
    assert measuring.format_bytes(-2 * 1024**2) == "-2.0 MiB"  # a difference may be negative


@pytest.mark.parametrize("pipe", [None, "tiny", 123])
def test_component_footprints_needs_a_pipeline(pipe):
    with pytest.raises(TypeError, match="component_footprints needs a loaded pipeline"):
        measuring.component_footprints(pipe)


@pytest.mark.parametrize("meter", [measuring.PeakMemory, measuring.Stopwatch])
def test_meters_on_a_missing_gpu_say_so_before_the_block_runs(meter, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ran = []
    with pytest.raises(ValueError, match=r"device='cuda:1' .*no CUDA GPU.*'cpu'"):
        with meter("cuda:1"):
            ran.append(1)
    assert ran == []


@pytest.mark.parametrize("meter", [measuring.PeakMemory, measuring.Stopwatch])
@pytest.mark.parametrize("device", ["gpu", "", 1.5])
def test_meters_refuse_what_is_not_a_device(meter, device):
    with pytest.raises(ValueError, match="device must be"):
        meter(device)


@pytest.mark.parametrize("n", [-1, 0, 1.5, "3", None, True])
def test_smallest_p_value_needs_a_count_of_pairs(n):
    with pytest.raises((TypeError, ValueError), match="n must be a whole number of pairs"):
        smallest_possible_p_value(n)


def test_smallest_p_value_of_real_counts():
    assert smallest_possible_p_value(1) == 1.0
    assert smallest_possible_p_value(5) == 2 / 32


@pytest.mark.parametrize("timeout", [-1, 0, math.nan, "10", True])
def test_probe_timeout_must_be_a_positive_number(timeout):
    with pytest.raises((TypeError, ValueError), match="timeout must be"):
        measure_in_subprocess("result = 1", timeout=timeout)


@pytest.mark.parametrize("env,message", [({"A": 1}, "env values must be strings.*'A': 1"),
                                         ({1: "a"}, "env names must be strings"),
                                         ("A=1", "env must be a dict")])
def test_probe_env_must_map_strings_to_strings(env, message):
    with pytest.raises(TypeError, match=message):
        measure_in_subprocess("result = 1", env=env)


def test_env_flag_words(monkeypatch):
    monkeypatch.delenv("X_FLAG", raising=False)
    assert arguments.env_flag("X_FLAG") is None
    monkeypatch.setenv("X_FLAG", "  ")
    assert arguments.env_flag("X_FLAG") is None
    monkeypatch.setenv("X_FLAG", "On")
    assert arguments.env_flag("X_FLAG") is True
    monkeypatch.setenv("X_FLAG", "sometimes")
    with pytest.raises(ValueError, match="X_FLAG='sometimes' is not a yes/no value"):
        arguments.env_flag("X_FLAG")


@pytest.mark.parametrize("word", ["on", "YES", "True"])
def test_the_notebook_runner_reads_sd35_stand_in_like_the_package(monkeypatch, word):
    from tools.run_notebooks import decide_stand_in

    monkeypatch.setenv("SD35_STAND_IN", word)
    assert decide_stand_in() == (True, f"SD35_STAND_IN={word} asks for it")
