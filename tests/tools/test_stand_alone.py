"""The repository stands on its own: a reader clones it from GitHub with nothing beside it.

Nothing in it may read outside the repository at run or test time; the Colab twin's package list
(tools/colab/pip-freeze.gpu.txt) is the repository's own copy."""

import os
import re
import subprocess
import sys

from tools import colab_twin
from tools.navigation import REPO

# Written in pieces so this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", r"\.\.\\\\" + "shared", "shared" + "/colab", r"""["']""" + "shared" + r"""["']\s*\)?\s*/"""]))


def _clone(tmp_path):
    clone = tmp_path / "sd35-notebooks"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    return clone


def test_a_clone_alone_refers_to_nothing_beside_it(tmp_path):
    clone = _clone(tmp_path)
    files = subprocess.run(["git", "-C", str(clone), "ls-files", "-z"], capture_output=True, check=True).stdout
    found = []
    for name in files.decode().split("\0"):
        path = clone / name
        if not name or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += [f"{name}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert not found, f"files that refer outside the repository: {found}"


def test_the_pattern_finds_what_it_is_for():
    for text in ["../" + "sha" + "red/colab/x.txt", 'Path("' + "sha" + 'red") / "colab"', "REPO.parent / 'sha" + "red' / x"]:
        assert OUTSIDE.search(text), text


def test_the_twin_reads_its_list_inside_a_clone(tmp_path):
    clone = _clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SD35_COLAB_LIST"}
    code = "from tools.colab_twin import COLAB_LIST, twin_key; print(COLAB_LIST); print(COLAB_LIST.is_file()); print(twin_key())"
    out = subprocess.run([sys.executable, "-c", code], cwd=clone, env=env, capture_output=True, text=True, timeout=120, check=True)
    where, exists, key = out.stdout.split()
    assert where == str(clone / "tools" / "colab" / "pip-freeze.gpu.txt")
    assert exists == "True"
    # The same list as this checkout's: the cached twin is the same one.
    assert key == colab_twin.twin_key(REPO / "tools" / "colab" / "pip-freeze.gpu.txt")


def test_the_colab_list_can_still_be_replaced(tmp_path, monkeypatch):
    other = tmp_path / "list.txt"
    other.write_text("torch==2.11.0\n")
    monkeypatch.setenv("SD35_COLAB_LIST", str(other))
    assert colab_twin._colab_list() == other
