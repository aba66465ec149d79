"""Hypothesis settings for the property tests.

Two profiles, chosen with the environment variable TORCHROLLOUT_HYPOTHESIS_PROFILE:

- `ci` (the default): a bounded number of examples per property, so the whole directory
  runs in well under a minute on a small CI machine, drawn the same way on every run
  (derandomized), so a run fails only on a change of the code, never on a new draw;
- `soak`: many more examples, for a long hunt on a developer machine or a nightly job:
  `TORCHROLLOUT_HYPOTHESIS_PROFILE=soak pytest tests/property`.

Neither has a deadline: the time one example takes depends on the machine, not the code.
Hypothesis keeps the failing examples it finds in `.hypothesis/` (git-ignored) and tries
them first on the next run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_VARIABLE = "TORCHROLLOUT_HYPOTHESIS_PROFILE"

settings.register_profile(
    "ci",
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "soak",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get(PROFILE_VARIABLE, "ci"))
