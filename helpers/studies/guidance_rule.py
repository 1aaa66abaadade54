"""A guidance rule that weighs prompt adherence against over-saturation, picked on one half of the
seeds and confirmed on the other (notebook 04).

The rule: among guidance values > 1 (CFG on) whose mean clipped-pixel fraction stays under a stated
bound, take the one with the best mean adherence; choose the *smallest* value whose adherence is not
significantly below it (paired sign-flip tests, Holm-adjusted). Picking "the best" and comparing
against it on the same seeds flatters it, so the choice is made on one half of the seeds and checked
once on the other half. With few seeds no difference can be significant: the result then says
"could not tell" instead of "as good".
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .stats import (
    PairedComparison,
    _guidance_values,
    _values,
    detectable_effect,
    holm,
    paired_comparison,
    sign_flip_p_value,
)


@dataclass(frozen=True)
class GuidanceChoice:
    """What `choose_guidance` decided, and every number it decided on. Per-candidate tuples follow
    `candidates`; NaN where a candidate was not compared (over the clipping bound, or `best` itself)."""

    candidates: tuple[float, ...]  # guidance values > 1, in the order given
    max_clipped: float  # the bound on the mean fraction of clipped pixels
    alpha: float
    pick_seeds: tuple[int, ...]  # row indices the choice was made on
    confirm_seeds: tuple[int, ...]  # held-out row indices it was checked on
    clipped_pick: tuple[float, ...]  # mean clipped fraction per candidate, pick half
    allowed: tuple[float, ...]  # candidates under the bound on the pick half
    best: float | None  # highest mean adherence among `allowed`, pick half
    mean_difference: tuple[float, ...]  # mean of score(g) - score(best) per seed, pick half
    p_raw: tuple[float, ...]  # sign-flip p of that difference
    p_holm: tuple[float, ...]  # Holm-adjusted over the candidates compared
    chosen: float | None  # smallest allowed candidate not significantly below `best`
    confirmation: PairedComparison | None  # held-out half: score(chosen) - score(best); None if chosen is best
    clipped_confirm: float | None  # chosen's mean clipped fraction on the held-out half
    pick_detectable: float  # smallest drop (SD of the paired difference) the pick half detects at 80 %
    confirm_detectable: float  # the same for the single held-out test

    @property
    def pick_could_tell(self) -> bool:
        """False when no comparison on the pick half could reach significance at all (too few seeds)."""
        return math.isfinite(self.pick_detectable)

    @property
    def confirmed(self) -> bool:
        """True when the held-out half agrees: the chosen value's clipping stays under the bound and,
        if it is not the best itself, its adherence is not significantly below the best's, in a test
        that could have detected a drop (finite `confirm_detectable`)."""
        if self.chosen is None or self.clipped_confirm is None or self.clipped_confirm > self.max_clipped:
            return False
        if self.confirmation is None:
            return True
        below = self.confirmation.significant and self.confirmation.mean_difference < 0
        return not below and math.isfinite(self.confirm_detectable)

    def verdict(self) -> str:
        """The result in one sentence, called what the data can carry."""
        bound = f"{100 * self.max_clipped:g} %"
        if self.chosen is None:
            return (f"No guidance value above 1 kept its clipped pixels under {bound} on the pick seeds: nothing "
                    "is chosen (look at the images, or state a looser bound).")
        n_pick, n_confirm = len(self.pick_seeds), len(self.confirm_seeds)
        if not self.pick_could_tell:
            return (f"Could not tell: with {n_pick} pick seeds no difference can be significant, so {self.chosen:g} is "
                    f"only the smallest value under the {bound} clipping bound, not a value shown to adhere as well "
                    f"as {self.best:g}. Add seeds (`seeds_needed` says how many).")
        picked = f"{self.chosen:g} (the smallest value under {bound} clipping not significantly below {self.best:g}"
        picked += f", on {n_pick} seeds)"
        if self.clipped_confirm is not None and self.clipped_confirm > self.max_clipped:
            return f"Not confirmed: {picked} clipped {100 * self.clipped_confirm:.1f} % of pixels on the {n_confirm} held-out seeds."
        c = self.confirmation
        if c is not None and c.significant and c.mean_difference < 0:
            return f"Not confirmed: {picked} scored significantly below {self.best:g} on the {n_confirm} held-out seeds."
        if c is not None and not math.isfinite(self.confirm_detectable):
            return (f"Chosen, not confirmed: {picked}; the {n_confirm} held-out seeds are too few for any test to "
                    "reach significance, so the check could not tell.")
        power = "" if c is None else f" (it could detect a drop of {self.confirm_detectable:.1f} SD at 80 % power)"
        return f"Confirmed on {n_confirm} held-out seeds{power}: {picked}."


def split_seeds(n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Row indices of the pick half (0, 2, 4, ...) and the held-out half (1, 3, 5, ...)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ValueError(f"choosing on one half of the seeds and confirming on the other needs at least 2 seeds, not {n!r}.")
    return tuple(range(0, n, 2)), tuple(range(1, n, 2))


def _table(values, rows: int | None, columns: int, name: str) -> np.ndarray:
    try:
        table = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be one row of numbers per seed, not {values!r:.60}.") from None
    if table.ndim != 2 or table.shape[1] != columns or table.shape[0] == 0 or (rows is not None and table.shape[0] != rows):
        raise ValueError(f"{name} must be one row per seed{f' ({rows})' if rows else ''} and one column per guidance "
                         f"value ({columns}), not shape {table.shape}.")
    _values(table, name)
    return table


def choose_guidance(guidance_values, scores, clipped, *, max_clipped: float = 0.05, alpha: float = 0.05) -> GuidanceChoice:
    """Apply the rule (module docstring). `scores[s][i]` is seed s's adherence (e.g. CLIP score) at
    `guidance_values[i]`, `clipped[s][i]` its fraction of clipped pixels (0 to 1). Even rows pick,
    odd rows confirm."""
    values = _guidance_values(guidance_values)
    table = _table(scores, None, len(values), "scores")
    clip = _table(clipped, table.shape[0], len(values), "clipped")
    if np.any((clip < 0) | (clip > 1)):
        raise ValueError("clipped must hold fractions of pixels, from 0 to 1.")
    for name, x in (("max_clipped", max_clipped), ("alpha", alpha)):
        if isinstance(x, bool) or not isinstance(x, numbers.Real) or not 0 < x <= 1:
            raise ValueError(f"{name} must be a number above 0 and at most 1 (e.g. 0.05), not {x!r:.40}.")
    columns = [i for i, g in enumerate(values) if g > 1]
    if not columns:
        raise ValueError(f"No guidance value above 1 in {values}: at 1 or below CFG is off, so there is nothing to choose.")
    pick, confirm = split_seeds(table.shape[0])
    candidates = tuple(values[i] for i in columns)
    clipped_pick = tuple(float(clip[list(pick), i].mean()) for i in columns)
    allowed = [k for k in range(len(columns)) if clipped_pick[k] <= max_clipped]
    nan = (math.nan,) * len(columns)
    if not allowed:
        return GuidanceChoice(candidates, max_clipped, alpha, pick, confirm, clipped_pick, (), None, nan, nan, nan,
                              None, None, None, detectable_effect(len(pick), alpha), detectable_effect(len(confirm), alpha))
    best = max(allowed, key=lambda k: table[list(pick), columns[k]].mean())
    others = [k for k in allowed if k != best]
    differences = {k: table[list(pick), columns[k]] - table[list(pick), columns[best]] for k in others}
    raw = {k: sign_flip_p_value(differences[k]) for k in others}
    adjusted = dict(zip(others, holm([raw[k] for k in others]), strict=True)) if others else {}
    below = {k for k in others if adjusted[k] < alpha and differences[k].mean() < 0}
    chosen = min((k for k in allowed if k not in below), key=lambda k: candidates[k])
    confirmation = None
    if chosen != best:
        confirmation = paired_comparison(table[list(confirm), columns[best]], table[list(confirm), columns[chosen]],
                                         confidence=1 - alpha)
    m = max(len(others), 1)  # Holm's first step tests the smallest p at alpha / m
    pick_detectable = detectable_effect(len(pick), alpha / m)  # math.inf when no p can reach alpha / m
    return GuidanceChoice(
        candidates=candidates, max_clipped=max_clipped, alpha=alpha, pick_seeds=pick, confirm_seeds=confirm,
        clipped_pick=clipped_pick, allowed=tuple(candidates[k] for k in allowed), best=candidates[best],
        mean_difference=tuple(float(differences[k].mean()) if k in differences else (0.0 if k == best else math.nan)
                              for k in range(len(columns))),
        p_raw=tuple(raw.get(k, 1.0 if k == best else math.nan) for k in range(len(columns))),
        p_holm=tuple(adjusted.get(k, 1.0 if k == best else math.nan) for k in range(len(columns))),
        chosen=candidates[chosen], confirmation=confirmation,
        clipped_confirm=float(clip[list(confirm), columns[chosen]].mean()),
        pick_detectable=pick_detectable, confirm_detectable=detectable_effect(len(confirm), alpha),
    )


def seeds_needed(effect: float, comparisons: int = 1, alpha: float = 0.05, power: float = 0.8) -> int:
    """Seeds per half for `comparisons` Holm-corrected paired tests to detect a drop of `effect` SD
    (of the per-seed difference) with probability `power`: the smallest n with
    detectable_effect(n, alpha / comparisons) <= effect (which also makes the exact test able to reach it)."""
    if isinstance(effect, bool) or not isinstance(effect, numbers.Real) or not effect > 0:
        raise ValueError(f"effect must be a positive number of standard deviations (e.g. 1.0), not {effect!r:.40}.")
    if isinstance(comparisons, bool) or not isinstance(comparisons, numbers.Integral) or comparisons < 1:
        raise ValueError(f"comparisons must be a whole number >= 1, not {comparisons!r:.40}.")
    n = 1
    while detectable_effect(n, alpha / comparisons, power) > effect:
        n += 1
    return n
