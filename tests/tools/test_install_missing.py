"""tools/install_missing.py, the set-up cell's installer, in a throwaway venv against local wheels
(offline): it installs only what is missing or too old, keeps installed packages' pins (no pip
ERROR), and asks for a restart only when a module the kernel imported was replaced."""

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tools import install_missing
from tools.navigation import REPO

SCRIPT = REPO / "tools" / "install_missing.py"


def make_wheel(folder: Path, name: str, version: str, requires=()) -> Path:
    """A minimal pure-Python wheel: module `name` (with `__version__`) and its metadata."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A venv with sd35demo 1.0 and sd35dependent 1.0 (which needs sd35demo<3) installed; local
    wheels of sd35demo 2.0 and 3.0 on offer, nothing from the network."""
    root = tmp_path_factory.mktemp("install-missing")
    wheels = root / "wheels"
    wheels.mkdir()
    for version in ("1.0", "2.0", "3.0"):
        make_wheel(wheels, "sd35demo", version)
    make_wheel(wheels, "sd35dependent", "1.0", requires=["sd35demo<3"])
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    environ = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PIP_CONSTRAINT": ""}
    environ.pop("PYTHONPATH", None)
    subprocess.run([python, "-m", "pip", "install", "-q", "sd35demo==1.0", "sd35dependent==1.0"], check=True, env=environ)
    return python, environ, root


def run(env, requirements: str, *modules: str):
    python, environ, root = env
    path = root / "requirements.txt"
    path.write_text(requirements)
    done = subprocess.run([python, str(SCRIPT), str(path), *modules], capture_output=True, text=True, env=environ)
    version = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('sd35demo'))"],
                             capture_output=True, text=True, env=environ).stdout.strip()
    return done, version


def reset(env):
    python, environ, _ = env
    subprocess.run([python, "-m", "pip", "install", "-q", "sd35demo==1.0"], check=True, env=environ)


def test_nothing_missing_means_no_output_and_no_pip(env):
    done, version = run(env, "sd35demo>=1.0\n# a comment\nsd35dependent\n", "sd35demo")
    assert (done.returncode, done.stdout, done.stderr, version) == (0, "", "", "1.0")


def test_too_old_is_upgraded_within_installed_pins_without_pip_errors(env):
    # Unconstrained, pip would take sd35demo 3.0 and print "ERROR: ... sd35dependent requires sd35demo<3".
    reset(env)
    done, version = run(env, "sd35demo>=2\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert version == "2.0"
    assert "ERROR" not in done.stdout + done.stderr
    assert "sd35demo 1.0 (needs >=2)" in done.stdout and "sd35demo 1.0 -> 2.0" in done.stdout
    assert "RESTART" not in done.stdout.upper()


def test_restart_is_asked_only_when_an_imported_module_was_replaced(env):
    reset(env)
    done, version = run(env, "sd35demo>=2\n", "os", "sd35demo", "sys")
    assert (done.returncode, version) == (install_missing.RESTART, "2.0")
    assert "RESTART NEEDED" in done.stdout and "sd35demo (imported as sd35demo)" in done.stdout


def test_missing_package_is_installed_and_needs_no_restart(env):
    python, environ, _ = env
    subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "sd35dependent"], check=True, env=environ)
    done, _ = run(env, "sd35dependent\n", "sd35dependent")  # a module name nobody had imported for real
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sd35dependent missing" in done.stdout and "RESTART" not in done.stdout.upper()


def test_unmet_reads_markers_and_ranges(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("packaging>=1\npytest<1\nnot-a-real-package-sd35>=1\nnumpy>=1; python_version < '3'\n")
    unmet = [(str(r), v) for r, v in install_missing.unmet(install_missing.read_requirements(path))]
    assert unmet == [("pytest<1", metadata.version("pytest")), ("not-a-real-package-sd35>=1", None)]


def test_broken_dependents_finds_installed_pins_a_change_would_break():
    dists = install_missing.installed()
    # transformers 5 needs huggingface_hub >= 1.x: an old hub would break it, a current one not.
    assert "transformers" in install_missing.broken_dependents({"huggingface-hub": "0.20.0"}, dists)
    assert "transformers" not in install_missing.broken_dependents({"huggingface-hub": metadata.version("huggingface_hub")}, dists)
