"""Fixtures shared by every test folder: a real enclave for the integration and browser tests.

Loaded once for the whole run (as a plugin), so one pytest run starts one enclave however many
folders use it.
"""

pytest_plugins = ["tests.enclave_fixtures", "tests.skip_policy", "tests.web_coverage"]
