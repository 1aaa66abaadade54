"""The README's main job: every notebook executed headlessly, stand-in announced loudly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tools import run_notebooks

REPO = Path(__file__).resolve().parents[2]


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


def write_light_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('done')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def write_slow_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("print('first cell done')"),
        nbformat.v4.new_code_cell("import pathlib, time\npathlib.Path('started.txt').touch()\ntime.sleep(120)"),
        nbformat.v4.new_code_cell("print('never reached')"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; kill / a CI cancel
def test_an_interrupted_run_is_marked_unfinished_never_passes_for_complete(tmp_path, stop):
    write_slow_notebook(tmp_path / "02_slow.ipynb")
    write_light_notebook(tmp_path / "03_after.ipynb")
    out = tmp_path / "outputs"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.Popen(
        [sys.executable, "-m", "tools.run_notebooks", *(str(tmp_path / n) for n in
         ("02_slow.ipynb", "03_after.ipynb")), "--output", str(out), "--stand-in", "yes"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    started = out / "run-001" / "02_slow" / "started.txt"
    deadline = time.monotonic() + 120
    while not started.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), run.communicate(timeout=60)[0] if run.poll() is not None else "timed out"
    run.send_signal(stop)
    printed = run.communicate(timeout=60)[0]
    assert run.returncode != 0
    assert "INTERRUPTED during 02_slow.ipynb" in printed and "0 of 2 notebooks finished" in printed
    folder = out / "run-001"
    assert not (folder / "02_slow" / "02_slow.ipynb").exists()  # nothing that looks complete
    assert (folder / "02_slow" / "02_slow.UNFINISHED.ipynb").is_file()
    assert not (folder / "03_after").exists()
    mark = (folder / "UNFINISHED.txt").read_text()
    assert "INTERRUPTED during 02_slow.ipynb" in mark and "not run 03_after.ipynb" in mark
    assert not (folder / "summary.txt").exists()


def test_a_finished_run_has_a_summary_and_no_unfinished_mark(tmp_path, capsys):
    write_light_notebook(tmp_path / "01_probe.ipynb")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "02_broken.ipynb")
    out = tmp_path / "o"
    assert run_notebooks.main([str(tmp_path / "01_probe.ipynb"), str(tmp_path / "02_broken.ipynb"),
                               "--output", str(out)]) == 1
    folder = out / "run-001"
    assert not (folder / "UNFINISHED.txt").exists()
    summary = (folder / "summary.txt").read_text()
    assert "ok      01_probe.ipynb" in summary and "FAILED  02_broken.ipynb" in summary
    assert (folder / "02_broken" / "02_broken.FAILED.ipynb").is_file()
    assert not (folder / "02_broken" / "02_broken.ipynb").exists()


def test_kernels_talk_over_local_sockets_and_print_no_warning(tmp_path, capfd):
    """ipykernel warns once per kernel about unencrypted TCP; `make notebooks` must print nothing
    beyond the banner, so kernels run over IPC (Unix sockets)."""
    import nbformat

    from tools.run_notebooks import execute_notebook

    source = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")]), source)
    out = execute_notebook(source, tmp_path / "run", {})
    assert nbformat.read(out, as_version=4).cells[0].outputs[0]["text"] == "42\n"
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err and "TCP" not in captured.err, captured.err


def test_a_stalled_cell_fails_fast_naming_itself(tmp_path):
    """A cell that stalls in the kernel fails after the cell timeout the test harness gives
    (notebook_harness.CELL_TIMEOUT, 240 s; 8 s here), saying so and where every thread waited,
    instead of stalling the test run."""
    from notebook_harness import CELL_TIMEOUT

    assert CELL_TIMEOUT < 600
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time\ndef waits_for_nothing():\n    time.sleep(600)  # stalls\n"
                                          "waits_for_nothing()")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "stall.ipynb")
    started = time.monotonic()
    with pytest.raises(TimeoutError) as stalled:
        run_notebooks.execute_notebook(tmp_path / "stall.ipynb", tmp_path / "out", {}, timeout=8)
    assert time.monotonic() - started < 300  # the kernel's start on a busy machine, then 8 s
    message = str(stalled.value)
    assert message.startswith("stall.ipynb: ") and "timed out" in message and "time.sleep(600)" in message
    # The cause is on record: every thread's stack, written by the kernel shortly before the timeout
    # (kernel_stall_stacks.py), the stalled function in the cell's own thread, which comes last.
    stacks = message.partition("Every thread's stack shortly before the timeout")[2]
    assert stacks.count("(most recent call first)") >= 2, message[-3000:]
    assert "in waits_for_nothing" in stacks.rsplit("Thread 0x", 1)[1], stacks[-2000:]


def test_stall_stacks_come_shortly_before_the_cell_timeout():
    assert run_notebooks.stall_stacks_after(None) == 0  # no timeout, no watchdog
    assert run_notebooks.stall_stacks_after(8) == pytest.approx(6.4)
    assert run_notebooks.stall_stacks_after(240) == 225  # the test harness's cell timeout: 15 s before


class _MissedWakeUpSocket:
    """A zmq socket stand-in whose message is there from the start but whose first poll, like an
    asyncio poll that missed the descriptor's edge, sees nothing until its wait runs out."""

    def __init__(self, polls_missed: int):
        self.polls_missed, self.waits_ms = polls_missed, []

    async def poll(self, timeout_ms):
        self.waits_ms.append(timeout_ms)
        return 0 if len(self.waits_ms) <= self.polls_missed else 1


def _sliced_channel(socket):
    import asyncio

    channel_class = run_notebooks._sliced_poll_client().shell_channel_class
    channel = channel_class.__new__(channel_class)  # no zmq: only get_msg's waiting is under test
    channel.socket = socket

    async def recv():
        return {"msg_type": "execute_reply"}

    channel._recv = recv
    return channel, asyncio.run


def test_a_missed_wake_up_costs_one_poll_slice_not_the_cell_timeout():
    """jupyter/nbclient#312, as notebook 06's `@interact` cell met it: the kernel's reply is waiting
    but the first poll does not see it. Each wait is cut into POLL_SLICE_S slices, so the next slice
    finds the reply, instead of a single poll of the whole timeout (600 s) returning it at its end."""
    socket = _MissedWakeUpSocket(polls_missed=1)
    channel, run = _sliced_channel(socket)
    assert run(channel.get_msg(timeout=600)) == {"msg_type": "execute_reply"}
    assert socket.waits_ms == [1000, 1000]  # two slices of POLL_SLICE_S, never 600 000 ms
    endless = _MissedWakeUpSocket(polls_missed=3)
    channel, run = _sliced_channel(endless)
    assert run(channel.get_msg(timeout=None)) == {"msg_type": "execute_reply"}  # no timeout: it polls on
    assert endless.waits_ms == [1000] * 4


def test_a_sliced_wait_still_times_out_at_its_deadline():
    from queue import Empty

    socket = _MissedWakeUpSocket(polls_missed=10**6)
    channel, run = _sliced_channel(socket)
    started = time.monotonic()
    with pytest.raises(Empty):
        run(channel.get_msg(timeout=0.25))
    assert len(socket.waits_ms) == 1 and 240 <= socket.waits_ms[0] <= 250  # a last slice: what is left
    assert time.monotonic() - started < 5
