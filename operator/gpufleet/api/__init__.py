"""The gpufleet.io API types: the single source of truth for the CRDs, the operator and the facade.

Everything that reads or writes a Host or a GPU goes through these models, so a field is
declared once: its JSON name (camelCase, as Kubernetes conventions want), its documentation
(what `kubectl explain` shows) and its validation (what the API server enforces through the
generated CRD schema, and what Python code enforces before it ever sends a request).
"""
