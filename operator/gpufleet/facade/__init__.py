"""The REST facade: the legacy host API, served from informer caches on top of the Host/GPU CRDs.

`app.create_app` builds the aiohttp application; `main.serve` runs it in a loop (as `gpufleet dev`
does) and `main.run` is `gpufleet facade`. docs/facade.md documents the API and its error codes.
"""
