"""The facade's caches are the foundation's informers (`gpufleet.informer`); the names it uses."""

from __future__ import annotations

from gpufleet.informer import Indexer, Informer, Obj, Store

__all__ = ["Indexer", "Informer", "Obj", "Store"]
