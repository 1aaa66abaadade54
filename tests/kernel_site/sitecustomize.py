"""TEST-ONLY: enable the bitsandbytes CPU shim in notebook kernels started by the test suite.

Python imports `sitecustomize` at start-up when this folder is on PYTHONPATH, which only the
tests' own subprocesses (tests/notebook_harness.py, the benchmark tests) put it on.

The shim is enabled when diffusers' bitsandbytes quantizer is first imported, not at start-up:
importing it here cost every process started with this folder on its path 8 s (diffusers,
bitsandbytes and torchao), including each notebook's `install_missing.py` check, which imports none
of them. A process that never imports the quantizer never pays for it, and one that does gets the
shim before its first use (class attributes, patched right after the module runs).
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUANTIZER_MODULE = "diffusers.quantizers.bitsandbytes.bnb_quantizer"


class _ShimOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when QUANTIZER_MODULE is imported, it lets the usual finders find it,
    then runs the shim right after the module's own code."""

    def find_spec(self, name, path=None, target=None):
        if name != QUANTIZER_MODULE:
            return None
        sys.meta_path.remove(self)  # once: the shim patches the classes for the whole process
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            from bnb_cpu_shim import enable_bnb_cpu_shim

            enable_bnb_cpu_shim()

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _ShimOnImport())  # (nothing has imported the quantizer this early at start-up)
