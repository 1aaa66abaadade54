"""Run every notebook headlessly (the README's main job): `python -m tools.run_notebooks`.

Each notebook in notebooks/ is executed top to bottom with papermill into a fresh folder
outputs/run-NNN/ (ignored by git; an earlier run's results are never overwritten), with its
parameters cell set for this machine: the real SD3.5 models when there is a
CUDA GPU and a Hugging Face token, otherwise the offline stand-in, announced loudly.

Only a notebook that ran to its end carries its own name: it executes as NAME.UNFINISHED.ipynb
and is renamed when done (NAME.FAILED.ipynb when a cell failed). The run folder holds
UNFINISHED.txt until the run ends, when summary.txt replaces it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from helpers.output_folders import fresh_run_dir, write_atomically

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
DEFAULT_OUTPUT = REPO / "outputs"
STALL_STACKS = Path(__file__).resolve().parent / "kernel_stall_stacks.py"
UNFINISHED_MARK = "UNFINISHED.txt"
SUMMARY = "summary.txt"


def notebook_paths(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks, in reading order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def decide_stand_in() -> tuple[bool, str]:
    """(stand_in, why): real models need a CUDA GPU and a Hugging Face token."""
    import torch

    from helpers.loading.arguments import env_flag
    from helpers.loading.hub_access import find_token

    if env_flag("SD35_STAND_IN"):  # 1/true/yes/on, any case; a word it does not know is refused
        return True, f"SD35_STAND_IN={os.environ['SD35_STAND_IN'].strip()} asks for it"
    if not torch.cuda.is_available():
        return True, "no CUDA GPU on this machine"
    if find_token() is None:
        return True, "no Hugging Face token (set HF_TOKEN or run `hf auth login`)"
    return False, "CUDA GPU and Hugging Face token found"


# How long one wait for a kernel message may last before the socket is polled afresh (see below).
POLL_SLICE_S = 1.0


def _sliced_poll_client():
    """jupyter_client's asyncio kernel client, its channels polling in POLL_SLICE_S slices.

    A message can arrive without waking an asyncio poll of its zmq socket (the socket's file descriptor
    signals edges, and one can be missed): `get_msg(timeout=T)` then returns it only when T runs out. In
    the suite this held notebook 06's `@interact` cell, which the kernel had finished in 0.2 s, for the
    whole cell timeout (600 s once, 120 s in a stress run of 16), after which the cell passed. The
    same is reported with ipywidgets cells in jupyter/nbclient#312. Polling afresh each slice finds a
    message that is waiting, so a missed wake-up costs at most POLL_SLICE_S."""
    from queue import Empty
    from time import monotonic

    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.channels import AsyncZMQSocketChannel

    class SlicedPollChannel(AsyncZMQSocketChannel):
        async def get_msg(self, timeout: float | None = None) -> dict:
            deadline = None if timeout is None else monotonic() + timeout
            while True:
                left = None if deadline is None else max(0.0, deadline - monotonic())
                wait = POLL_SLICE_S if left is None else min(POLL_SLICE_S, left)
                if await self.socket.poll(int(wait * 1000)):
                    return await self._recv()
                if left is not None and left <= wait:
                    raise Empty

    class SlicedPollClient(AsyncKernelClient):
        shell_channel_class = SlicedPollChannel
        iopub_channel_class = SlicedPollChannel
        stdin_channel_class = SlicedPollChannel
        control_channel_class = SlicedPollChannel

    return SlicedPollClient


def _ipc_kernel_manager(stalled_after: float = 0):
    """A kernel manager that talks to its kernel over local Unix sockets rather than TCP (ipykernel
    warns once per kernel about unencrypted TCP, and nothing here needs a network port), and tells
    the kernel when a running cell counts as stalled (SD35_STALL_STACKS_AFTER, kernel_stall_stacks.py)."""
    import tempfile

    from jupyter_client.manager import AsyncKernelManager

    folder = Path(tempfile.mkdtemp(prefix="sd35-kernel-"))
    client = _sliced_poll_client()

    class IPCKernelManager(AsyncKernelManager):
        stacks_file = folder / "stall-stacks.txt"

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(folder / "ipc")
            self.client_factory = client

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw["env"] = {**(kw.get("env") or os.environ), "SD35_STALL_STACKS_AFTER": f"{stalled_after:g}",
                         "SD35_STALL_STACKS_FILE": str(self.stacks_file)}
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return IPCKernelManager


def execute_notebook(path: Path, output_dir: Path, parameters: dict, timeout: int = 3600,
                     kernel_name: str = "python3", cwd: Path | None = None) -> Path:
    """Execute one notebook with papermill into `output_dir`; return the executed copy's path.

    The kernel (`kernel_name`) starts in `cwd`, by default `output_dir`, so images a notebook saves
    land beside it. The copy is
    written as NAME.UNFINISHED.ipynb and takes its own name only once every cell has run
    (NAME.FAILED.ipynb when one failed): an interrupted run can never pass for a finished one."""
    import papermill
    from nbclient.exceptions import CellTimeoutError

    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / path.name
    running = output_dir / f"{path.stem}.UNFINISHED.ipynb"
    manager = _ipc_kernel_manager(stall_stacks_after(timeout))
    try:
        papermill.execute_notebook(
            str(path),
            str(running),
            parameters=parameters,
            cwd=str(cwd or output_dir),
            kernel_name=kernel_name,
            progress_bar=False,
            execution_timeout=timeout,
            # papermill's default of 60 s failed kernels that import torch on 2 busy cores (CI): a
            # kernel that never starts still fails, in 5 minutes.
            start_timeout=300,
            kernel_manager_class=manager,
            # A cell near its timeout has every thread's stack written to a file, which the timeout error carries.
            extra_arguments=[f"--IPKernelApp.exec_files={[str(STALL_STACKS)]}"],
        )
    except papermill.PapermillExecutionError:
        if running.exists():
            os.replace(running, output_dir / f"{path.stem}.FAILED.ipynb")
        raise
    except CellTimeoutError as error:  # nbclient's; papermill passes it on as it is
        raise TimeoutError(f"{path.name}: {error}\n{stall_stacks(manager.stacks_file)}") from error
    finally:  # the kernel's sockets and its stacks file; the kernel has been shut down by now
        shutil.rmtree(manager.stacks_file.parent, ignore_errors=True)
    os.replace(running, out)
    return out


def stall_stacks(stacks_file: Path, limit: int = 8000) -> str:
    """The thread stacks a stalled cell's kernel wrote (kernel_stall_stacks.py) shortly before its timeout."""
    try:
        dump = stacks_file.read_text()
    except OSError:
        dump = ""
    if "(most recent call first)" not in dump:
        return "(no thread stacks were written before the timeout)"
    return "Every thread's stack shortly before the timeout (the cell's own thread is last):\n" + dump[-limit:]


def stall_stacks_after(timeout: float | None) -> float:
    """Seconds after which a running cell's stacks are dumped: shortly before `timeout` (0: never)."""
    return 0 if not timeout else max(1.0, timeout - min(15.0, timeout / 5))


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all in notebooks/)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="where run-NNN folders of executed notebooks go")
    parser.add_argument("--stand-in", choices=("auto", "yes", "no"), default="auto")
    args = parser.parse_args(argv)

    if args.stand_in == "auto":
        stand_in, why = decide_stand_in()
    else:
        stand_in, why = args.stand_in == "yes", f"--stand-in {args.stand_in}"
    if stand_in:
        print("#" * 78)
        print(f"# OFFLINE STAND-IN ({why}): random weights, images are noise.")
        print("# Every notebook runs end to end, but no picture means anything.")
        print("#" * 78, flush=True)
    else:
        print(f"Real SD3.5 models ({why}).", flush=True)

    paths = [Path(p).resolve() for p in args.notebooks] or notebook_paths()
    if not paths:
        print(f"No notebooks found in {NOTEBOOKS}.", file=sys.stderr)
        return 1
    # The kernels import `helpers` from this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    run_dir = fresh_run_dir(args.output)
    mark = run_dir / UNFINISHED_MARK
    mark.write_text("This run has not finished: it is still running, or it was stopped. A notebook\n"
                    "named *.UNFINISHED.ipynb stopped part-way; only NAME.ipynb ran to its end.\n")
    # `kill` and CI cancellations stop a run like Ctrl-C does: reported, and marked unfinished.
    in_main_thread = threading.current_thread() is threading.main_thread()  # signals need it
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if in_main_thread else None
    failed, done, lines = [], [], []
    try:
        for path in paths:
            started = time.perf_counter()
            out_dir = run_dir / path.stem
            try:
                out = execute_notebook(path, out_dir, {"STAND_IN": stand_in})
            except Exception as e:  # report every notebook, then fail at the end
                failed.append(path.name)
                lines.append(f"FAILED  {path.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                print(lines[-1], flush=True)
                continue
            done.append(path.name)
            shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
            lines.append(f"ok      {path.name} in {time.perf_counter() - started:.0f} s -> {shown}")
            print(lines[-1], flush=True)
    except KeyboardInterrupt:
        stopped = paths[len(done) + len(failed)].name
        not_run = [p.name for p in paths[len(done) + len(failed) + 1:]]
        lines += [f"INTERRUPTED during {stopped}: its executed copy is {Path(stopped).stem}.UNFINISHED.ipynb"]
        lines += [f"not run {name}" for name in not_run]
        mark.write_text(mark.read_text() + "\n".join(lines) + "\n")
        print(lines[-1 - len(not_run)], flush=True)
        print(f"INTERRUPTED: {len(done)} of {len(paths)} notebooks finished; the run in {run_dir} is "
              f"marked unfinished ({UNFINISHED_MARK}).", flush=True)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    lines.append(f"{len(paths) - len(failed)} of {len(paths)} notebooks ran; outputs in {run_dir}")
    write_atomically(run_dir / SUMMARY, "\n".join(lines) + "\n", overwrite=True)
    mark.unlink()
    print(lines[-1])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
