"""The negative-prompt study as a batch job: seeds x conditions x models, CLIP-scored.

    python benchmarks/negative_prompt_study.py                             # the quick design: ~20 min on a free T4
    python benchmarks/negative_prompt_study.py --design full               # 1024², 16 seeds: hours on a T4
    accelerate launch --num_processes 4 benchmarks/negative_prompt_study.py --seeds 64   # 4 GPUs
    accelerate launch --multi_gpu --num_processes 2 benchmarks/negative_prompt_study.py  # 2 CPU processes

Each process generates its share of the jobs (helpers.studies.jobs.run_study: accelerate's
split_between_processes); the main process gathers the rows into <output>/run-NNN/results.csv,
beside one PNG per image, and prints the per-condition table and the NF4-vs-bf16 comparison.
A fresh run-NNN folder is made every time (nothing is overwritten); --resume finishes the newest
unfinished run of the same jobs instead (an --output on Google Drive survives a recycled Colab
runtime). Without a GPU the offline stand-in runs (random weights: the numbers mean nothing) and
NF4 rows say "needs a GPU".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helpers.studies.jobs import (  # noqa: E402
    BLOG_OBJECT,
    BLOG_PLACEMENT_PROMPT,
    BLOG_PROMPT,
    DEFAULT_LABELS,
    negative_prompt_conditions,
    plan_jobs,
    run_study,
)
from helpers.studies.results import compare_negative_effect, summarize  # noqa: E402
from helpers.studies.stats import format_p  # noqa: E402
from helpers.studies.timing import DESIGNS, describe_design, study_design  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=BLOG_PROMPT)
    parser.add_argument("--object", default=BLOG_OBJECT, help="what the negative prompt should remove")
    parser.add_argument("--placement-prompt", default=BLOG_PLACEMENT_PROMPT)
    parser.add_argument("--labels", nargs="+", default=list(DEFAULT_LABELS),
                        help="CLIP zero-shot labels: the object's first, then the alternatives")
    parser.add_argument("--models", nargs="+", default=["sd35-large", "sd35-large-nf4"])
    parser.add_argument("--design", choices=sorted(DESIGNS), default="quick",
                        help="quick: about 20 minutes on a free T4 (512², at least 6 seeds); full: 1024², 16 seeds")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ... N-1); default: the design's")
    parser.add_argument("--guidance", type=float, default=3.5)
    parser.add_argument("--steps", type=int, default=None, help="default: 28, or 4 on the stand-in")
    parser.add_argument("--size", type=int, default=None, help="pixels, square; default the design's, or 64 on the stand-in")
    parser.add_argument("--output", type=Path, default=REPO / "outputs" / "negative_prompt_study",
                        help="a fresh run-NNN folder is created inside")
    parser.add_argument("--resume", action="store_true", help="finish the newest unfinished run of these jobs")
    parser.add_argument("--stand-in", choices=("auto", "yes", "no"), default="auto")
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be at least 1, not {args.seeds}.")
    if len(args.labels) < 2:
        parser.error("--labels needs the object's label and at least one alternative.")
    return args


def main(argv=None) -> int:
    from helpers.loading.planner import use_stand_in

    args = parse_args(argv)
    stand_in = use_stand_in({"auto": None, "yes": True, "no": False}[args.stand_in])
    steps = args.steps or (4 if stand_in else 28)
    conditions = negative_prompt_conditions(args.prompt, args.object, args.placement_prompt)
    design = study_design(args.design, len(conditions) * len(args.models), seeds=args.seeds)
    size = args.size or (64 if stand_in else design["size"])
    jobs = plan_jobs(conditions, args.models, range(design["seeds"]), guidance_scale=args.guidance,
                     num_inference_steps=steps, height=size, width=size)
    study = run_study(jobs, args.output, labels=args.labels, stand_in=stand_in, resume=args.resume)
    if study is None:  # not the main process: it has handed its rows over
        return 0
    print(f"{len(study.rows)} jobs -> {study.csv_path}")
    print(f"This run: {describe_design(design)}.")
    if stand_in:
        print("OFFLINE STAND-IN: random weights, these numbers mean nothing.")
    print(f"{'model':<18} {'condition':<32} {'n':>3}  P({args.object}) mean [95% bootstrap CI]")
    for entry in summarize(study.rows):
        numbers = (f"{entry['mean']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"
                   if entry["n"] else entry["status"])
        print(f"{entry['model']:<18} {entry['condition']:<32} {entry['n']:>3}  {numbers}")
    if len(args.models) == 2:
        a, b = args.models
        for condition in conditions[1:3]:
            c = compare_negative_effect(study.rows, a, b, condition.name)
            if c is None:
                print(f"{b} vs {a}, {condition.name}: not measured (a model did not run here)")
            else:
                print(f"{b} vs {a}, {condition.name}: extra drop in P(object) {c.mean_difference:+.3f} "
                      f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}], {format_p(c.p_value)}, n={c.n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
