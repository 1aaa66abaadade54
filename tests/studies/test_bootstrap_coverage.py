"""The bootstrap interval covers the true mean as often as it says: data simulated with a known
mean, the empirical coverage compared with the level, within binomial error. (An interval built at
97.5% while labelled 95% passes any check of its width to 15%; its coverage gives it away.)"""

import math

import numpy as np

from helpers.studies.stats import bootstrap_mean_ci

N, DATASETS, RESAMPLES = 40, 4000, 500


def student_t_cdf(x: float, nu: int) -> float:
    """P(T <= x) for Student's t with `nu` degrees of freedom, by Simpson's rule on its density
    (no scipy here): 1/2 + the integral from 0 to x of
    Gamma((nu+1)/2) / (sqrt(nu pi) Gamma(nu/2)) (1 + t^2/nu)^(-(nu+1)/2) dt."""
    log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
    t = np.linspace(0.0, x, 20001)
    f = np.exp(log_c - (nu + 1) / 2 * np.log1p(t**2 / nu))
    h = x / 20000
    return 0.5 + h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())


def expected_coverage(confidence: float, n: int) -> float:
    """The percentile bootstrap of a normal sample's mean is (to its resampling noise) the interval
    mean +- z * s_n / sqrt(n), with s_n the plug-in (divide by n) standard deviation. Since
    (mean - mu) / (s / sqrt(n)) is Student's t with n - 1 degrees of freedom and s_n = s sqrt((n-1)/n),
    it covers mu with probability P(|T| <= z sqrt((n-1)/n)): a little under the nominal level
    (0.940 for 95% at n = 40)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return 2 * student_t_cdf(z * math.sqrt((n - 1) / n), n - 1) - 1


def test_the_t_cdf_is_right_where_tables_give_it():
    # Printed tables: t(0.975, 10) = 2.228, t(0.95, 39) = 1.685; the normal limit: P(Z <= 1.96) = 0.975.
    assert abs(student_t_cdf(2.228, 10) - 0.975) < 2e-4
    assert abs(student_t_cdf(1.685, 39) - 0.95) < 2e-4
    assert abs(student_t_cdf(1.96, 10**6) - 0.975) < 1e-4
    assert abs(expected_coverage(0.95, 40) - 0.940) < 0.002


def test_bootstrap_ci_covers_a_known_mean_at_its_level():
    rng = np.random.default_rng(2026)
    mu = 1.5
    covered = 0
    for i in range(DATASETS):
        _, low, high = bootstrap_mean_ci(rng.normal(mu, 2.0, N), 0.95, resamples=RESAMPLES, seed=i)
        covered += low <= mu <= high
    coverage = covered / DATASETS
    expected = expected_coverage(0.95, N)
    # Within 3 binomial standard errors (0.011): a 97.5% interval covers ~0.962, a 90% one ~0.89.
    tolerance = 3 * math.sqrt(expected * (1 - expected) / DATASETS)
    assert abs(coverage - expected) <= tolerance, (coverage, expected, tolerance)
