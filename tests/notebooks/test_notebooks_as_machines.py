"""Every notebook end to end as an 8 GB card and as a 16 GB Mac (SD35_AS_MACHINE), on the stand-in.

Pass means: no cell error; every load fits the machine (a section that cannot run there says what it
needs and skips itself, before loading; notebook 02's plan table shows a refused plan as its row); every plan the notebook printed ("Plan: ...") is the plan of a
load it then made. Each recorded load is then planned on every other machine, without re-running the
notebook: it fits there, or `fit_to_machine` finds what that machine runs instead.
"""

from __future__ import annotations

import re

import pytest
from notebook_harness import cell_outputs_text, run_notebook

from helpers.loading import as_machine, hardware_profiles, machine_fit

MACHINES = ("RTX 4060 8 GB", "Apple M2 16 GB")
PARAMETERS = {  # the same small runs as each notebook's own test
    "01_quantized_loading.ipynb": dict(SIZE=64, STEPS=2),
    "02_loading_plans.ipynb": dict(STEPS=2),
    "03_quantize_once.ipynb": dict(STEPS=2),
    "04_guidance_scale.ipynb": dict(GUIDANCE_VALUES=[1.0, 3.5], SEEDS=[0, 1], STEPS=2, SIZE=64),
    "05_negative_prompts.ipynb": dict(N_SEEDS=3, GRID_GUIDANCES=[1.0, 3.5], STEPS=2, BLOG_SEEDS=6),
    "06_studio.ipynb": dict(),
    "07_quantization_backends.ipynb": dict(STEPS=2),
}


def run_as(machine: str, name: str, tmp_path, monkeypatch) -> tuple[str, list[dict]]:
    """Run notebooks/<name> as on `machine`; (everything it printed, the loads it recorded)."""
    log = tmp_path / "loads.jsonl"
    monkeypatch.setenv(as_machine.ENV, machine)
    monkeypatch.setenv(as_machine.LOG_ENV, str(log))
    notebook = run_notebook(name, tmp_path / "out", **PARAMETERS[name])  # a cell error raises here
    return cell_outputs_text(notebook), (as_machine.read_log(log) if log.exists() else [])


def replay(entry: dict, machine: hardware_profiles.HardwareProfile) -> None:
    """Plan a recorded load on `machine`: it fits, or the notebook's helper finds what does."""
    options = {k: v for k, v in as_machine.options_from(entry["options"]).items() if k != "device"}
    try:
        plan = hardware_profiles.plan_on(machine, entry["model"], **options)
    except ValueError as e:  # a call that machine cannot take (offload='model' or 8-bit on a Mac): one clear error
        assert machine.device in str(e) or "Apple Silicon" in str(e) or "offload=" in str(e), e
        plan = None
    if plan is None or not plan.fits:
        with hardware_profiles.on_profile(machine):
            kwargs, fitted = machine_fit.choose(entry["model"], stand_in=False)
        assert fitted.fits, f"{entry['model']} on {machine.name}: nothing fits"


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("name", PARAMETERS)
def test_notebook_runs_as_machine(name, machine, tmp_path, monkeypatch):
    printed, loads = run_as(machine, name, tmp_path, monkeypatch)
    assert all(entry["profile"] == machine for entry in loads)
    refused = [entry for entry in loads if not entry["plan"]["fits"]]
    if name.startswith("02"):  # its plan table tries every plan: a refused one is a row saying so, nothing loaded
        assert printed.count("out of GPU memory") >= 1 if refused else True
    else:
        assert not refused, f"{name} as {machine} tried loads that do not fit there: {refused}"
    made = {entry["plan"]["words"] for entry in loads}
    for plan in re.findall(r"^Plan: (.+)$", printed, re.M):
        assert plan in made, f"{name} printed 'Plan: {plan}' but loaded only {sorted(made)}"
    if name.startswith("04") and machine == "Apple M2 16 GB":  # Large cannot run there: Medium, and one sentence
        assert "Model changed: sd35-large cannot run here, so sd35-medium" in printed
        assert re.search(r"^sd35-large: not run here \(sd35-large needs .+ than this machine has\)\.$", printed, re.M)
    for other in as_machine.MACHINES:
        for entry in loads:
            replay(entry, other)

