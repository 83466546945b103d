"""Browser tests: the enclave driven through a real Chromium."""
