"""Imported by every property test here (not a conftest.py: tests/conftest.py is imported as
`conftest` by other folders, and a second one would take its name). Hardening (issue 27 §5): each class of bad input as a property test whose inputs Hypothesis
generates, so new ones are tried every run. Few examples each (the suite runs on 2 cores), no
deadline (a first call may load a pipeline), and no example database on disk (no shared path
between test workers)."""

from hypothesis import Phase, settings

# No shrinking: a failing example is reported as drawn (shrinking re-runs loads for minutes).
settings.register_profile("bad-inputs", max_examples=15, deadline=None, database=None,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate))
settings.load_profile("bad-inputs")

