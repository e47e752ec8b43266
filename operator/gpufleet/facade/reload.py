"""Files the facade reads again when they change on disk: its TLS certificate and static tokens.

cert-manager renews certificates into their Secret, and the kubelet swaps the mounted files for
the new ones (an atomic symlink flip of the volume's `..data`); the static tokens file is a Secret
too. So the facade looks at the files every `GPUFLEET_RELOAD_INTERVAL_SECONDS` and, when their
content changed, loads them again, for connections and requests from then on, without a restart.

A file read halfway through an update (a new certificate with the old key, a missing file) fails
to load: the old content stays in use, a warning is logged, and the next look tries again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import pathlib
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)


def fingerprint(paths: Sequence[pathlib.Path]) -> bytes | None:
    """A digest of the files' contents, or None when one cannot be read."""
    digest = hashlib.sha256()
    try:
        for path in paths:
            digest.update(path.read_bytes())
            digest.update(b"\0")
    except OSError:
        return None
    return digest.digest()


class FileWatch:
    """Calls `load` when the content of `paths` changed since it last loaded successfully."""

    def __init__(self, what: str, paths: Sequence[pathlib.Path], load: Callable[[], None]) -> None:
        self.what = what
        self.paths = list(paths)
        self._load = load
        self._loaded = fingerprint(self.paths)
        self._failed: bytes | None = None

    def check(self) -> bool:
        """Reload if the files changed; True when they were reloaded."""
        current = fingerprint(self.paths)
        if current is None or current == self._loaded or current == self._failed:
            return False
        try:
            self._load()
        except Exception as error:  # keep serving with what was loaded before
            self._failed = current
            logger.warning("could not reload the %s (keeping the previous one): %s", self.what, error)
            return False
        self._loaded, self._failed = current, None
        logger.info("reloaded the %s", self.what)
        return True

    async def run(self, interval: float) -> None:
        """Check every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.check()
