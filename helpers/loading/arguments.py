"""Checks on loading arguments (`plan_loading`, `load_pipeline`, the memory model), run first: one
sentence per mistake naming the argument, what was given and what is expected."""

from __future__ import annotations

import math
import numbers
import os

import torch

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def check_bool(name: str, value, allow_none: bool = False) -> None:
    """`value` must be True or False (or None when `allow_none`): 'no', 0 or 1 are not read as a
    yes/no, since `'no'` is truthy and would silently mean yes."""
    if (value is None and allow_none) or isinstance(value, bool):
        return
    expected = "True, False or None (automatic)" if allow_none else "True or False"
    raise ValueError(f"{name} must be {expected}, not {value!r}.")


def env_flag(name: str) -> bool | None:
    """The yes/no environment variable `name`: True for 1/true/yes/on, False for 0/false/no/off (any
    case), None when unset or empty; anything else is refused rather than ignored."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(
        f"The environment variable {name}={raw!r} is not a yes/no value: set it to one of "
        f"{', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)} (any case), or unset it."
    )


def check_number(name: str, value, *, allow_none: bool = False, minimum: float | None = 0,
                 what: str = "a number") -> None:
    """`value` must be a finite real number (not a bool, a string or NaN), at least `minimum`."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {what}{' or None' if allow_none else ''}, not {type(value).__name__} {value!r}.")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ValueError(f"{name} must be a finite number, not {value!r:.40}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, not {value!r}.")


def check_byte_count(name: str, value, allow_none: bool = True) -> None:
    """`value` must be a finite, non-negative number of bytes (e.g. 16 * 1024**3), or None."""
    check_number(name, value, allow_none=allow_none, what="a number of bytes")


OFFLOAD_WORDS = ("auto", "none", "model", "group", "sequential")


def check_plan_options(*, offload, drop_t5, quantize_t5, stand_in, free_bytes=None, host_bytes=None,
                       staged_t5=None) -> None:
    """The yes/no options must be bools ('no' is truthy), the byte counts real, finite and >= 0,
    and `offload` a word or a bool (1 and 0 would pass for True and False)."""
    check_bool("drop_t5", drop_t5, allow_none=True)  # None: the planner picks T5 by its ranking
    check_bool("quantize_t5", quantize_t5, allow_none=True)
    check_bool("staged_t5", staged_t5, allow_none=True)
    check_bool("stand_in", stand_in, allow_none=True)
    check_byte_count("free_bytes", free_bytes)
    check_byte_count("host_bytes", host_bytes)
    if not (isinstance(offload, bool) or (isinstance(offload, str) and offload in OFFLOAD_WORDS)):
        raise ValueError(
            f"offload must be 'auto', 'none', 'model', 'group', 'sequential', True or False, not {offload!r}."
        )


KERNELS = ("flash", "memory-efficient", "math", "mps")  # what devices.sdpa_kernel answers
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_dtype(dtype) -> None:
    if not (isinstance(dtype, torch.dtype) and dtype in DTYPES):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, not {dtype!r}.")


def check_working_memory_args(transformer_config, size, dtype, kernel) -> None:
    """`memory_model.working_bytes`'s arguments: a family name or a config dict, a positive size in
    pixels, a floating dtype and one of SDPA's kernels."""
    from .architectures import TRANSFORMER_CONFIGS

    needed = ("num_attention_heads", "attention_head_dim", "patch_size")
    if isinstance(transformer_config, str) and transformer_config not in TRANSFORMER_CONFIGS:
        raise ValueError(f"transformer_config must be one of {', '.join(map(repr, TRANSFORMER_CONFIGS))} "
                         f"or a transformer config dict, not {transformer_config!r}.")
    if not isinstance(transformer_config, (str, dict)) or (
        isinstance(transformer_config, dict) and not all(k in transformer_config for k in needed)
    ):
        raise TypeError(f"transformer_config must be a family name ('large', 'medium') or a transformer "
                        f"config dict with {', '.join(needed)}, not {transformer_config!r:.200}.")
    sides = tuple(size) if isinstance(size, (tuple, list)) and len(size) == 2 else (size,)
    if any(isinstance(side, bool) or not isinstance(side, numbers.Integral) or side < 16 for side in sides):
        raise ValueError(f"size must be a whole number of pixels (at least 16), or a (height, width) pair of them, "
                         f"not {size!r}.")
    check_dtype(dtype)
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, not {kernel!r}.")
