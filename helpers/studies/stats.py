"""Small-sample statistics for image experiments, in numpy: confidence intervals and paired tests.

A handful of seeds per condition is all a GPU hour buys, so every mean comes with an interval
and every comparison of two models is paired on the seed (same starting noise for both).
"""

from __future__ import annotations

import math
import numbers
import statistics
from dataclasses import dataclass

import numpy as np

EXACT_SIGN_FLIPS_UP_TO = 16  # 2**16 = 65,536 sign patterns: exact and still instant


def _values(values, name: str = "values") -> np.ndarray:
    try:
        if isinstance(values, (str, bytes)):
            raise ValueError
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a list of numbers, not {type(values).__name__} {values!r:.60}.") from None
    if array.size == 0:
        raise ValueError(f"{name} is empty: at least one number is needed.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite numbers; drop failed runs first.")
    return array


MAX_RESAMPLES = 10_000_000  # beyond this a resampling table no longer fits in memory


def _check_resamples(resamples) -> None:
    """`resamples` must be a whole number from 1 to MAX_RESAMPLES."""
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) \
            or not 1 <= resamples <= MAX_RESAMPLES:
        raise ValueError(f"resamples must be a whole number from 1 to {MAX_RESAMPLES:,} (e.g. 10000), not {resamples!r:.40}.")


def _check_seed(seed) -> None:
    """`seed` must be a whole number >= 0 (numpy's random generators refuse negative seeds)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, not {seed!r:.40}.")


def _guidance_values(guidance_values) -> list[float]:
    """`guidance_values` as floats; one clear error for text, None or NaN."""
    try:
        if isinstance(guidance_values, (str, bytes)):
            raise TypeError
        values = [g for g in guidance_values]
        if any(isinstance(g, (bool, str, bytes)) or not isinstance(g, numbers.Real) or not math.isfinite(g)
               for g in values):
            raise TypeError
    except TypeError:
        raise TypeError(f"guidance_values must be a list of finite numbers (e.g. [3.5, 5, 7]), "
                        f"not {guidance_values!r:.60}.") from None
    return [float(g) for g in values]


def bootstrap_mean_ci(values, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile-bootstrap confidence interval.

    The interval resamples the values with replacement `resamples` times (seeded, so reruns give
    the same interval). With one value, or identical values, the interval is that value."""
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), not {confidence!r:.40}.")
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) or resamples < 1:
        raise ValueError(f"resamples must be a whole number >= 1 (e.g. 10000), not {resamples!r}.")
    _check_resamples(resamples)
    _check_seed(seed)
    array = _values(values)
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, array.size, size=(resamples, array.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(array.mean()), float(low), float(high)


def sign_flip_p_value(differences, resamples: int = 100_000, seed: int = 0) -> float:
    """Two-sided p-value of a paired randomization (sign-flip) test that the mean difference is 0.

    Under "no difference" each paired difference is as likely positive as negative, so the
    observed |mean| is compared with the |mean| of every sign pattern: exactly for up to
    EXACT_SIGN_FLIPS_UP_TO pairs, from `resamples` random patterns beyond that."""
    _check_resamples(resamples)
    _check_seed(seed)
    d = _values(differences, "differences")
    observed = abs(d.mean())
    n = d.size
    if n <= EXACT_SIGN_FLIPS_UP_TO:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
    else:
        patterns = np.random.default_rng(seed).choice([-1, 1], size=(resamples, n))
    means = np.abs((patterns * d).mean(axis=1))
    # A tiny tolerance so float rounding never hides the observed pattern itself.
    return float(np.mean(means >= observed - 1e-12))


@dataclass(frozen=True)
class PairedComparison:
    """Mean of b - a over pairs, its bootstrap interval and the sign-flip test's p-value."""

    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    b_higher: int  # pairs where b > a
    a_higher: int  # pairs where a > b

    @property
    def significant(self) -> bool:
        """True when the sign-flip test rejects "no difference" at the 1 - confidence level.

        The verdict comes from the exact test, not from the bootstrap interval: with few pairs the
        interval can exclude 0 where the test cannot reach significance at all (3 pairs that all
        moved by the same amount: the interval is that point, p = 0.25)."""
        return self.p_value < 1 - self.confidence


def paired_comparison(a, b, confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Compare paired measurements a[i], b[i] (e.g. the same seed under two models)."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.size != b.size:
        raise ValueError(f"paired_comparison needs one b per a: got {a.size} and {b.size} values.")
    d = b - a
    mean, low, high = bootstrap_mean_ci(d, confidence, seed=seed)
    return PairedComparison(
        n=int(d.size),
        mean_difference=mean,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        p_value=sign_flip_p_value(d, seed=seed),
        b_higher=int((d > 0).sum()),
        a_higher=int((d < 0).sum()),
    )


def smallest_possible_p_value(n: int) -> float:
    """The smallest two-sided p-value an exact sign-flip test can reach with n pairs: 2 / 2**n."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be a whole number of pairs (seeds), not {type(n).__name__} {n!r}.")
    if n < 1:
        raise ValueError(f"n must be a whole number of pairs (seeds), at least 1, not {n}.")
    return min(1.0, 2 / 2**n)


def format_p(p: float) -> str:
    """A p-value for prose: 'p = 0.031', or 'p < 0.001'."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a p-value (a number between 0 and 1), not {type(p).__name__} {p!r:.40}.")
    if not math.isnan(p) and not 0 <= p <= 1:
        raise ValueError(f"p must be a p-value between 0 and 1 (or NaN for n/a), not {p!r}.")
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if not math.isnan(p) else "p = n/a"


def describe(comparison: PairedComparison) -> str:
    """A paired comparison in one line of prose: the mean change of b - a, its interval, the test's
    p-value, the number of seeds and the smallest p that many seeds can reach at all."""
    c = comparison
    return (f"{c.mean_difference:+.3f} ({c.confidence:.0%} CI [{c.ci_low:+.3f}, {c.ci_high:+.3f}], "
            f"{format_p(c.p_value)}, {c.n} seeds; the smallest p {c.n} seeds can reach: "
            f"{smallest_possible_p_value(c.n):.3f})")


def verdict(comparison: PairedComparison, lower: str, higher: str, neither: str = "no significant change") -> str:
    """`lower` or `higher` (by the sign of the mean change) when the sign-flip test is significant,
    `neither` otherwise: the verdict never comes from the point estimate alone."""
    if not comparison.significant:
        return neither
    return lower if comparison.mean_difference < 0 else higher


def holm(p_values) -> list[float]:
    """Holm-adjusted p-values, in the order given: with m tests, the k-th smallest p is multiplied by
    m - k + 1, and the adjusted values are made non-decreasing in that order (Holm 1979). Reject a
    test at level alpha when its adjusted p < alpha; the chance of any false rejection stays <= alpha."""
    p = _values(p_values, "p_values")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p_values must be p-values between 0 and 1, not {p_values!r:.60}.")
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return [float(x) for x in out]


def detectable_effect(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest paired effect, in standard deviations of the per-seed difference, that n seeds
    detect with probability `power` at two-sided level `alpha` (normal approximation:
    (z[1 - alpha/2] + z[power]) / sqrt(n)). math.inf when the exact sign-flip test cannot reach
    alpha at all with n pairs (`smallest_possible_p_value(n) >= alpha`): then "no difference"
    only means "could not tell"."""
    if not (isinstance(alpha, numbers.Real) and 0 < alpha < 1 and isinstance(power, numbers.Real) and 0 < power < 1):
        raise ValueError(f"alpha and power must be numbers between 0 and 1, not {alpha!r} and {power!r}.")
    if smallest_possible_p_value(n) >= alpha:
        return math.inf
    z = statistics.NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) / math.sqrt(n)
