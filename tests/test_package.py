"""Importing helpers changes nothing global (no seeds, plotting styles, warning filters, log levels)."""

import json
import subprocess
import sys

from conftest import REPO  # noqa: E402

PROBE = r"""
import json, logging, random, warnings
import numpy as np, torch, matplotlib
def snapshot():
    return {
        "random": random.getstate()[1][:5],
        "numpy": np.random.get_state()[1][:5].tolist(),
        "torch_seed": torch.initial_seed(),
        "torch_dtype": str(torch.get_default_dtype()),
        "threads": torch.get_num_threads(),
        "grad": torch.is_grad_enabled(),
        "rc": {k: str(v) for k, v in matplotlib.rcParams.items()},
        "warnings": [str(f) for f in warnings.filters],
        "root_log": logging.getLogger().level,
    }
before = snapshot()
import helpers
after = snapshot()
print(json.dumps({k: before[k] == after[k] for k in before}))
"""


def test_import_changes_no_global_state():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    unchanged = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(unchanged.values()), {k for k, same in unchanged.items() if not same}
