"""The README's main job: every notebook executed headlessly, stand-in announced loudly."""

import json

import nbformat

from helpers import run_notebooks


def test_finds_the_numbered_notebooks_in_order(tmp_path):
    for name in ("02_b.ipynb", "01_a.ipynb", "draft.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in run_notebooks.notebook_paths(tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]
    assert run_notebooks.notebook_paths()  # the repository has notebooks


def test_no_gpu_means_stand_in():
    stand_in, why = run_notebooks.decide_stand_in()
    assert stand_in and "GPU" in why


def write_probe_notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("STAND_IN = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "import helpers\nfrom pathlib import Path\n"
            "Path('figure.txt').write_text(repr(STAND_IN))\nprint('stand-in:', STAND_IN)"
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_main_runs_notebooks_into_the_output_folder(tmp_path, capsys):
    source = tmp_path / "01_probe.ipynb"
    write_probe_notebook(source)
    out = tmp_path / "outputs"
    assert run_notebooks.main([str(source), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "OFFLINE STAND-IN" in printed and "1 of 1 notebooks ran" in printed
    run = out / "run-001"
    executed = json.loads((run / "01_probe" / "01_probe.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "stand-in: True" in text
    assert (run / "01_probe" / "figure.txt").read_text() == "True"  # files land beside the notebook
    first_run = (run / "01_probe" / "01_probe.ipynb").read_bytes()
    assert run_notebooks.main([str(source), "--output", str(out)]) == 0
    assert (out / "run-002" / "01_probe" / "01_probe.ipynb").is_file()  # a second run gets its own folder
    assert (run / "01_probe" / "01_probe.ipynb").read_bytes() == first_run  # and the first is untouched


def test_a_failing_notebook_fails_the_job(tmp_path, capsys):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "01_broken.ipynb")
    assert run_notebooks.main([str(tmp_path / "01_broken.ipynb"), "--output", str(tmp_path / "o")]) == 1
    assert "FAILED  01_broken.ipynb" in capsys.readouterr().out
