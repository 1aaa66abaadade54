"""What the probe (probe.py) and its cases (probe_cases.py) share: one case's description, the fake
token and the heavy-work counter. Both import this module, never each other's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

FAKE_TOKEN = "hf_" + "PROBEfakeTOKEN0123456789abcdefghijklmnop"  # built, so no token-shaped string is committed
HEAVY = {"loads": 0, "steps": 0}  # finished pipeline loads and transformer calls, in this process


@dataclass
class Case:
    """One input tried: `call(ctx)` does it; `expect` is "error" (a clear early error is right) or
    "ok" (it must return, and `check(result, ctx)` must hold). `names`: words of which a clear
    message holds at least one (the argument, the problem). `any_error`: a full disk or an
    interrupt, where any error is fine as long as nothing is lost (`after` and protected files)."""

    area: str
    name: str
    call: Callable
    expect: str = "error"
    names: tuple = ()
    check: Callable | None = None
    after: Callable | None = None
    any_error: bool = False
    timeout: float = 30.0
    item: str = ""  # the issue 20 item it re-tries, if any
