"""Fixtures of the reliability tier (helpers in reliability_checks.py)."""

import pytest
from reliability_checks import snapshot


@pytest.fixture
def unchanged_repo():
    """Assert that the test changed no file under figures/, data/ or notebooks/."""
    before = snapshot()
    yield
    after = snapshot()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"files changed by a refused input: {changed[:10]}"
