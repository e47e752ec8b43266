"""The operator test fixtures live in `controller_support` (importable by the tests for helpers)."""

from controller_support import config, fleet, namespace, operator

__all__ = ["config", "fleet", "namespace", "operator"]
