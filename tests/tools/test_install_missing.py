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
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement

from tests.bad_inputs import property_settings  # noqa: F401 (the Hypothesis settings of the bad-input tests)
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


# Hardening (issue 27 §5, class 11): a line only pip understands, a BOM, a Latin-1 comment, a missing extra.
PIP_ONLY = st.sampled_from([
    "-r other.txt", "--requirement other.txt", "--extra-index-url https://example.org/simple", "-e .",
    "sd35demo==1.0 --hash=sha256:" + "0" * 64, "git+https://github.com/huggingface/diffusers.git",
    "sd35demo==1.0 \\", "https://example.org/sd35demo-1.0.tar.gz",
])
PLAIN = st.lists(st.sampled_from(["packaging>=1", "# a comment", "", "pytest ; python_version >= '3'"]), max_size=5)


@given(before=PLAIN, bad=PIP_ONLY, after=PLAIN)
def test_a_pip_only_line_is_refused_by_file_and_line_number(tmp_path_factory, before, bad, after):
    path = tmp_path_factory.mktemp("pip-only") / "requirements.txt"
    path.write_text("\n".join([*before, bad, *after]) + "\n")
    with pytest.raises(install_missing.RequirementsError) as error:
        install_missing.read_requirements(path)
    message = str(error.value)
    assert f"{path}, line {len(before) + 1}:" in message and repr(bad.strip()) in message
    assert "not supported here" in message


def test_the_script_reports_a_pip_only_line_in_one_line_and_exits_2(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("packaging\n-r other.txt\n")
    done = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert f"{path}, line 2:" in done.stderr and "Traceback" not in done.stderr


@given(comment=st.text(st.characters(min_codepoint=0xA0, max_codepoint=0xFF), min_size=1, max_size=20))
def test_a_bom_and_a_latin1_comment_are_read(tmp_path_factory, comment):
    folder = tmp_path_factory.mktemp("encodings")
    bom, latin1 = folder / "bom.txt", folder / "latin1.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + f"packaging>=1  # {comment}\n".encode())
    latin1.write_bytes(f"# {comment}\npackaging>=1\n".encode("latin-1"))
    for path in (bom, latin1):
        assert [str(r) for r in install_missing.read_requirements(path)] == ["packaging>=1"]


def test_a_missing_extra_counts_as_something_to_install(tmp_path):
    # accelerate[test-prod] asks for packages this venv lacks; plain accelerate and an empty extra
    # list are the controls (met as before).
    dist = metadata.distribution("accelerate")
    wanted = [Requirement(r) for r in dist.requires if "test-prod" in r]
    missing = [r.name for r in wanted if install_missing.installed_version(r.name) is None]
    assert missing, "this test needs an accelerate[test-prod] requirement that is not installed"
    path = tmp_path / "r.txt"
    path.write_text("accelerate[test-prod]\naccelerate\npackaging[]\n")
    assert [str(r) for r, _ in install_missing.unmet(install_missing.read_requirements(path))] == ["accelerate[test-prod]"]
