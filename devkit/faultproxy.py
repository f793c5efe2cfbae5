"""A TCP proxy on 127.0.0.1 that injects network faults between podenv and a real server.

Each connection is forwarded both ways. Once a connection has carried ``after`` bytes from
the server, it may be hit by the current fault, if any are left (``times``; None: every
connection):

* ``drop``: the connection is reset (RST) at that byte, both ways;
* ``stall``: no further byte is forwarded to the client, the connection stays open;
* ``trickle``: the rest is forwarded ``trickle_bytes`` every ``trickle_interval`` seconds;
* ``kill``: every connection is reset and the proxy stops listening, as a server that is
  killed looks to its clients (connections reset, then refused).

``injected`` counts the faults dealt, ``connections`` the connections accepted,
``bytes_down`` the bytes forwarded from the server before any fault, and ``ranges`` lists
the byte ranges the client asked for (HTTP Range headers), in order.
"""

import re
import socket
import struct
import threading
import time
from contextlib import suppress
from dataclasses import dataclass

_BUFFER = 64 << 10
_RANGE = re.compile(rb"\r\nrange: *bytes=(\d+)-(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Fault:
    kind: str  # drop | stall | trickle | kill
    after: int = 256 << 10
    times: int | None = 1
    trickle_bytes: int = 256
    trickle_interval: float = 0.2


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN: the peer sees 'connection reset'. The read side is
    shut first: that wakes a thread blocked reading it, which a bare close would not."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    sock.close()


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._fault: Fault | None = None
        self._left: int | None = None
        self._sockets: set[socket.socket] = set()
        self._stopped = threading.Event()
        self.injected = 0
        self.connections = 0
        self.bytes_down = 0
        self.ranges: list[tuple[int, int]] = []
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def set_fault(self, fault: Fault | None) -> None:
        with self._lock:
            self._fault = fault
            self._left = None if fault is None else fault.times
            self.injected = 0

    def stop(self) -> None:
        self._stopped.set()
        _reset(self._listener)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _reset(sock)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self.connections += 1
                self._sockets |= {client, server}
            threading.Thread(target=self._pump_up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(server, client), daemon=True).start()

    def _forget(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._sockets -= set(sockets)

    def _pump_up(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while data := client.recv(_BUFFER):
                self._note_ranges(data)
                server.sendall(data)
        except OSError:
            pass  # the client went away: close both
        _reset(server)
        _reset(client)
        self._forget(client, server)

    def _note_ranges(self, request: bytes) -> None:
        for match in _RANGE.finditer(request):
            with self._lock:
                self.ranges.append((int(match.group(1)), int(match.group(2))))

    def _take_fault(self) -> Fault | None:
        with self._lock:
            fault = self._fault
            if fault is None or self._left == 0:
                return None
            if self._left is not None:
                self._left -= 1
            self.injected += 1
            return fault

    def _pump_down(self, server: socket.socket, client: socket.socket) -> None:
        carried, fault = 0, None
        try:
            while data := server.recv(_BUFFER):
                if fault is None and self._fault is not None and carried + len(data) > self._fault.after:
                    threshold = self._fault.after
                    fault = self._take_fault()
                    if fault is not None:
                        client.sendall(data[: max(threshold - carried, 0)])
                        self._act(fault, server, client, data[max(threshold - carried, 0) :])
                        return
                client.sendall(data)
                carried += len(data)
                with self._lock:
                    self.bytes_down += len(data)
        except OSError:
            pass
        finally:
            _reset(client)
            _reset(server)
            self._forget(client, server)

    def _act(self, fault: Fault, server: socket.socket, client: socket.socket, rest: bytes) -> None:
        if fault.kind == "drop":
            return  # the caller resets both
        if fault.kind == "kill":
            self.stop()
            return
        if fault.kind == "stall":
            # The client giving up (the upward pump then closes both) is the only way out.
            while not self._stopped.wait(0.1) and client.fileno() >= 0:
                pass
            return
        if fault.kind == "trickle":
            self._trickle(fault, server, client, rest)

    def _trickle(self, fault: Fault, server: socket.socket, client: socket.socket, rest: bytes) -> None:
        pending = bytearray(rest)
        server.settimeout(0)
        while not self._stopped.is_set():
            try:
                more = server.recv(_BUFFER)
                if not more and not pending:
                    return
                pending += more
            except BlockingIOError:
                pass
            if pending:
                client.sendall(pending[: fault.trickle_bytes])
                del pending[: fault.trickle_bytes]
            time.sleep(fault.trickle_interval)
