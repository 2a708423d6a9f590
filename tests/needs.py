"""What a test needs from the system (apt packages, the default models).

Where it is missing the test is skipped, except under ``VOICEBOX_REQUIRE_ALL=1`` (set by
``.ci/run``): there ``scripts/setup.sh`` must have installed it, so its absence fails
the test instead of letting the suite pass with the test unrun.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("VOICEBOX_REQUIRE_ALL") == "1"


def missing(what: str) -> str:
    return f"{what}: not installed (scripts/setup.sh installs what the tests need)"


def needs(available: bool, what: str) -> pytest.MarkDecorator:
    """Mark a test (or a module, as ``pytestmark``) that needs ``what``."""
    if available:
        return pytest.mark.skipif(False, reason="")
    if REQUIRE_ALL:
        return pytest.mark.missing_requirement(missing(what))
    return pytest.mark.skip(reason=missing(what))


def skip_or_fail(what: str) -> None:
    """Inside a test or fixture: ``what`` turned out to be missing."""
    if REQUIRE_ALL:
        pytest.fail(missing(what), pytrace=False)
    pytest.skip(missing(what))
