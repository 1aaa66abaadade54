"""TEST-ONLY: enable the bitsandbytes CPU shim in notebook kernels started by the test suite.

Python imports `sitecustomize` at start-up when this folder is on PYTHONPATH, which only
tests/notebook_harness.py puts it on.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    from bnb_cpu_shim import enable_bnb_cpu_shim
except ImportError:  # a process without diffusers (e.g. a helper tool) just goes on
    pass
else:
    enable_bnb_cpu_shim()
