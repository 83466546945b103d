"""Fixtures shared by every test folder: a real enclave for the integration and browser tests.

Loaded once for the whole run (as a plugin), so one pytest run starts one enclave however many
folders use it. Also declares the Hypothesis profiles (``tests/hypothesis_budget.py``): ``full``
unless pytest is given ``--hypothesis-profile=fast`` (``scripts/check.sh`` does).
"""

from hypothesis import settings

from tests.hypothesis_budget import FAST, FULL

pytest_plugins = [
    "tests.enclave_fixtures",
    "tests.log_capture",
    "tests.skip_policy",
    "tests.web_coverage",
]

settings.register_profile("full", max_examples=FULL)
settings.register_profile("fast", max_examples=FAST)
settings.load_profile("full")
