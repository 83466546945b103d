"""Fixtures shared by every test folder: a real enclave for the integration and browser tests.

Loaded once for the whole run (as a plugin), so one pytest run starts one enclave however many
folders use it. Also declares the Hypothesis profiles (``tests/hypothesis_budget.py``): ``full``
unless pytest is given ``--hypothesis-profile=fast`` (``scripts/check.sh`` does).
"""

from hypothesis import HealthCheck, settings

from tests.hypothesis_budget import FAST, FULL

pytest_plugins = [
    "tests.enclave_fixtures",
    "tests.log_capture",
    "tests.skip_policy",
    "tests.web_coverage",
]

# No per-example deadline and no "too slow" health check: both are timed assertions, and on a
# shared 2-core machine a busy moment failed a correct example (test_policy's 200 ms deadline);
# slow properties show in the run's --durations instead.
_UNTIMED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("full", max_examples=FULL, **_UNTIMED)
settings.register_profile("fast", max_examples=FAST, **_UNTIMED)
settings.load_profile("full")
