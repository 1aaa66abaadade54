"""Run every notebook headlessly (the README's main job): `python -m helpers.run_notebooks`.

Each notebook in notebooks/ is executed top to bottom with papermill into a fresh folder
outputs/run-NNN/ (ignored by git; an earlier run's results are never overwritten), with its
parameters cell set for this machine: the real SD3.5 models when there is a
CUDA GPU and a Hugging Face token, otherwise the offline stand-in, announced loudly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .output_folders import fresh_run_dir

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
DEFAULT_OUTPUT = REPO / "outputs"


def notebook_paths(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks, in reading order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def decide_stand_in() -> tuple[bool, str]:
    """(stand_in, why): real models need a CUDA GPU and a Hugging Face token."""
    import torch

    from .hf_token import find_token

    if os.environ.get("SD35_STAND_IN", "").strip() in ("1", "true", "yes"):
        return True, "SD35_STAND_IN=1 asks for it"
    if not torch.cuda.is_available():
        return True, "no CUDA GPU on this machine"
    if find_token() is None:
        return True, "no Hugging Face token (set HF_TOKEN or run `hf auth login`)"
    return False, "CUDA GPU and Hugging Face token found"


def execute_notebook(path: Path, output_dir: Path, parameters: dict, timeout: int = 3600) -> Path:
    """Execute one notebook with papermill into `output_dir`; return the executed copy's path.

    The kernel starts in `output_dir`, so images a notebook saves land beside it."""
    import papermill

    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / path.name
    papermill.execute_notebook(
        str(path),
        str(out),
        parameters=parameters,
        cwd=str(output_dir),
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=timeout,
    )
    return out


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
    failed = []
    for path in paths:
        started = time.perf_counter()
        out_dir = run_dir / path.stem
        try:
            out = execute_notebook(path, out_dir, {"STAND_IN": stand_in})
        except Exception as e:  # report every notebook, then fail at the end
            failed.append(path.name)
            print(f"FAILED  {path.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
            continue
        print(f"ok      {path.name} in {time.perf_counter() - started:.0f} s -> {out.relative_to(REPO) if out.is_relative_to(REPO) else out}", flush=True)
    print(f"{len(paths) - len(failed)} of {len(paths)} notebooks ran; outputs in {run_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
