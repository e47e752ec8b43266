"""The gpufleet operator: Kopf handlers for Host lifecycle, liveness, GPU roll-up and agent tokens.

`handlers` holds every Kopf decorator and nothing else; the logic lives in plain modules that can
be tested without Kopf or an API server. The package is not called `operator` so that it never
shadows the standard library module of that name.
"""
