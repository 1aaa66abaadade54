"""Each notebook's machine-dependent choice, on every machine of README's table (and CPU only), at
plan level: one `fit_to_machine` call per notebook, evaluated with SD35_AS_MACHINE, no notebook run.

The choice must fit; the keyword arguments it returns must reproduce the plan it printed (what
load_pipeline then does); every change from the published model must have its sentence.
"""

from __future__ import annotations

import ast
import json

import pytest
import torch

import helpers
from helpers.loading import as_machine, machine_fit
from helpers.loading.quantization_backends import BACKENDS
from tools.run_notebooks import NOTEBOOKS

MACHINE_NAMES = [m.name for m in as_machine.MACHINES]


def parameters(name: str) -> dict:
    """The notebook's default parameters: the literal assignments of its `parameters` cell."""
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:  # an expression (e.g. "\n".join([...])): not a model choice
                pass
    return found


def choice(model: str) -> tuple[dict, object, list[str]]:
    """(kwargs, the plan they load, sentences) of fit_to_machine(model) on the switch's machine."""
    kwargs = helpers.fit_to_machine(model, stand_in=True, quiet=True)
    plan = helpers.plan_loading(**kwargs)
    return kwargs, plan, machine_fit.changes(model, plan)


def check_choice(model: str) -> object:
    kwargs, plan, sentences = choice(model)
    _, printed = machine_fit.choose(model, stand_in=True)
    assert plan.fits and not plan.stand_in, plan.reason
    assert machine_fit.plan_summary(plan) == machine_fit.plan_summary(printed)  # the printed plan is the loaded one
    if plan.t5 != "full":
        assert machine_fit.T5_SENTENCES[plan.t5] in sentences
    if plan.offload != "none":
        assert machine_fit.OFFLOAD_SENTENCES[plan.offload] in sentences
    if plan.dtype == torch.float16:
        assert any(s.startswith("fp16 instead of bf16") for s in sentences)
    if plan.preset != model:
        assert sentences[0].startswith(("Model changed", "Precision changed"))
    return plan


@pytest.fixture(params=MACHINE_NAMES)
def machine(request, monkeypatch, tiny_dir):
    monkeypatch.setenv(as_machine.ENV, request.param)
    return request.param


def test_04_and_06_load_what_fits(machine):
    for name in ("04_guidance_scale.ipynb", "06_studio.ipynb"):
        check_choice(parameters(name)["MODEL"])


def test_04_compares_the_models_that_fit_and_names_what_the_others_need(machine):
    for model in parameters("04_guidance_scale.ipynb")["COMPARE_MODELS"]:
        plan = helpers.plan_loading(model, stand_in=True)
        if not plan.fits:
            assert machine_fit.needs(plan).startswith(f"{model} needs ")


def test_05_runs_each_model_by_name_with_the_plan_it_printed(machine):
    ran = []
    for model in parameters("05_negative_prompts.ipynb")["MODELS"]:
        plan = check_choice(model)
        size = helpers.fit_to_machine(model, stand_in=True, quiet=True).get("size")  # the study's images' size
        by_name = helpers.plan_loading(plan.preset, stand_in=True, size=size)  # run_study: by name, offload="auto"
        assert machine_fit.plan_summary(by_name) == machine_fit.plan_summary(plan)
        ran.append(plan.preset)
    assert 1 <= len(set(ran)) <= 2


def test_07_has_its_bf16_reference_and_says_which_model(machine):
    family = "large" if machine_fit.transformer_room(None, "large") is None else "medium"
    assert machine_fit.transformer_room(None, family) is None  # the error column always has its reference
    for backend in BACKENDS.values():
        why = machine_fit.transformer_room(backend.quantization, family)
        assert why is None or why.startswith(f"SD3.5 {family.title()}'s transformer held as ")


def test_the_machines_differ_where_the_readme_says_they_do(monkeypatch, tiny_dir):
    chosen = {}
    for name in ("free Colab T4", "H100 80 GB", "Apple M2 16 GB"):
        monkeypatch.setenv(as_machine.ENV, name)
        chosen[name] = choice("sd35-large")[1]
    assert chosen["H100 80 GB"].preset == "sd35-large" and chosen["H100 80 GB"].dtype == torch.bfloat16
    assert chosen["free Colab T4"].quantization == "nf4" and chosen["free Colab T4"].dtype == torch.float16
    assert chosen["Apple M2 16 GB"].preset == "sd35-medium"
