"""The gpufleet operator: Host liveness from heartbeats, status and conditions, GPU roll-up,
agent tokens, Events and metrics, written by one elected replica.

Informers (`gpufleet.informer`) feed an in-memory view (`fleet`); a work queue (`workqueue`)
brings each host to what it should be (`status.plan`), level-based. Kopf is only the runtime
(login, the liveness probe): `handlers` holds its decorators and nothing else, and the logic
lives in plain modules that can be tested without Kopf. The package is not called `operator` so
that it never shadows the standard library module of that name.
"""
