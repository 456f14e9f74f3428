"""The early resident server's listener gives asyncio connections it makes Nagle-free.

uvicorn serves the socket :func:`clampdown_flows.resident_server.loopback_listener` made;
asyncio sets ``TCP_NODELAY`` on an accepted connection only when its socket says it is TCP.
A listener made with protocol 0 left Nagle's algorithm on: every API answer then waited
for the client's delayed acknowledgement (~40 ms a request).
"""

from __future__ import annotations

import asyncio
import socket

from clampdown_flows.resident_server import loopback_listener


def _nodelay_of_accepted(listener: socket.socket) -> int:
    async def main() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=listener)
        async with server:
            port = listener.getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                return await asyncio.wait_for(seen, 10)
            finally:
                writer.close()

    return asyncio.run(main())


def test_connections_to_the_early_servers_listener_have_nagle_off() -> None:
    listener = loopback_listener()
    assert listener.getsockname()[0] == "127.0.0.1"
    assert _nodelay_of_accepted(listener) != 0


def test_a_listener_without_its_protocol_named_would_leave_nagle_on() -> None:
    """The check above can fail: the way the listener used to be made."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    assert _nodelay_of_accepted(listener) == 0
