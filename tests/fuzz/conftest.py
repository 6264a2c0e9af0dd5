"""Hypothesis profiles for the fuzz suite: `ci` (default, well under a minute) and `long` (RW_FUZZ_PROFILE=long).

The profiles are registered here but not loaded globally, so the property tests of the services keep
their own settings; fuzz tests take theirs from `tests.fuzz.support.fuzz_settings`.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

REPO = Path(__file__).resolve().parents[2]
# Failing examples are replayed first on the next run; var/ is git-ignored runtime state.
_DATABASE = DirectoryBasedExampleDatabase(str(REPO / "var" / "hypothesis"))
# Servers under test are started once per test function and deliberately reused by every example.
_SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci", max_examples=50, deadline=None, database=_DATABASE, suppress_health_check=_SUPPRESSED, print_blob=True
)
settings.register_profile(
    "long", max_examples=1000, deadline=None, database=_DATABASE, suppress_health_check=_SUPPRESSED, print_blob=True
)
