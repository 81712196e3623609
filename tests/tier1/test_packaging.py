"""Tier 1: what a registered model records about its environment."""

from __future__ import annotations

from jobs.training.packaging import _requirements, public_version


def test_requirements_name_public_releases_only() -> None:
    """A local label (torch's ``+cpu``) names a build PyPI does not have: restoring the model's
    environment elsewhere would fail."""
    assert public_version("2.13.0+cpu") == "2.13.0"
    assert public_version("3.17.2") == "3.17.2"
    pins = _requirements()
    assert [p.split("==")[0] for p in pins][:2] == ["torch", "mlflow"]
    assert all("+" not in p and p.count("==") == 1 for p in pins), pins
