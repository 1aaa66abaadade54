"""requirements.txt, requirements-lock.txt and environment.yml list the same packages."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def requirement_lines(text):
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def name_of(requirement):
    return re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def environment_pip_lines():
    lines, inside = [], False
    for line in (REPO / "environment.yml").read_text().splitlines():
        if line.strip() == "- pip:":
            inside = True
            continue
        if inside and line.strip().startswith("- "):
            lines.append(line.strip()[2:])
    return lines


def test_environment_yml_matches_requirements_exactly():
    user = requirement_lines((REPO / "requirements.txt").read_text())
    assert environment_pip_lines() == user


def test_lock_pins_every_user_requirement_within_its_range():
    from packaging.requirements import Requirement

    user = {name_of(r): Requirement(r) for r in requirement_lines((REPO / "requirements.txt").read_text())}
    lock = {name_of(r): r for r in requirement_lines((REPO / "requirements-lock.txt").read_text())}
    assert set(user) <= set(lock), set(user) - set(lock)
    for name, requirement in user.items():
        assert "==" in lock[name], f"{name} is not pinned exactly in requirements-lock.txt"
        pinned = lock[name].split("==", 1)[1]
        assert requirement.specifier.contains(pinned, prereleases=True), f"{name}=={pinned} outside {requirement}"


def test_lock_has_only_dev_extras_beyond_the_user_list():
    user = {name_of(r) for r in requirement_lines((REPO / "requirements.txt").read_text())}
    lock = {name_of(r) for r in requirement_lines((REPO / "requirements-lock.txt").read_text())}
    assert lock - user <= {"pytest", "pytest-xdist", "execnet", "pytest-timeout", "hypothesis", "ruff", "playwright", "pre-commit"}


def test_colab_requirements_are_a_subset_with_the_same_ranges_and_no_jupyter():
    user = {name_of(r): r for r in requirement_lines((REPO / "requirements.txt").read_text())}
    colab = {name_of(r): r for r in requirement_lines((REPO / "requirements-colab.txt").read_text())}
    assert {"diffusers", "bitsandbytes"} <= set(colab) <= set(user), set(colab) - set(user)
    assert not set(colab) & {"jupyterlab", "notebook", "ipykernel", "ipywidgets", "torch"}
    assert all(colab[name] == user[name] for name in colab), "use requirements.txt's ranges"
