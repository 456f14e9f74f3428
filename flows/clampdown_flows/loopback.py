"""A free TCP port on the loopback interface, for a server this process starts.

One helper for the three places that start a local server (serve's and the resident
Prefect API, the drill's moto): the kernel picks the port. It can be taken again between
this answer and the server's bind; the servers say so (Prefect's exits 3, and its start
fails at once with the port named), so nothing waits on a port somebody else holds.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
