"""A free TCP port on loopback, for servers the tests and benchmarks start themselves."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now: the kernel picks it, so parallel runs do not collide.

    The socket is closed before the caller binds, so another process could take the port in
    between; on loopback, with ephemeral ports handed out in sequence, that does not happen in
    practice, and it is far rarer than the collisions of a fixed port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
