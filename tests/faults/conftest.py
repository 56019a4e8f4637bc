"""The uninterrupted reference run that the fault tests' resumed runs must match bit for bit."""

from tests.test_train import straight  # noqa: F401  (a fixture, shared)
