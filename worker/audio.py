"""Job audio in (an http(s) URL, a ``data:`` URI or bare base64, written to a local file), and
plain WAV bytes out.

A job's URL is untrusted: the worker runs inside a datacenter, next to metadata services
(169.254.169.254) and private networks. A URL is fetched only from a public address: every
connection, redirects included, is checked after it is made, on the address it actually
reached (so DNS answers and redirects cannot lead it elsewhere), and no proxy is used.
PODENV_AUDIO_PRIVATE_URLS=1 lifts this for a private deployment (and the tests' local server).
"""

import base64
import binascii
import http.client
import io
import ipaddress
import socket
import struct
import urllib.error
import urllib.request
import wave
from collections.abc import Sequence
from pathlib import Path

from worker import settings

MAX_INPUT_BYTES = settings.read_int("PODENV_MAX_INPUT_BYTES")
FETCH_TIMEOUT_S = 60


class InputError(ValueError):
    """A job input the worker cannot use; the message names the field."""


class PrivateAddressError(OSError):
    """A URL led to an address that is not public."""


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_global


def _check_peer(sock: socket.socket) -> None:
    if settings.read("PODENV_AUDIO_PRIVATE_URLS") == "1":
        return
    address = ipaddress.ip_address(sock.getpeername()[0].split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not _is_public(address):
        sock.close()
        raise PrivateAddressError(f"it leads to {address}, which is not a public address")


class _GuardedHTTP(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _check_peer(self.sock)


class _GuardedHTTPS(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _check_peer(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_GuardedHTTP, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_GuardedHTTPS, req)


# No proxy (its address would be the one checked), every connection guarded.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _HTTPHandler, _HTTPSHandler)


def _download(url: str, destination: Path, field_name: str) -> None:
    try:
        with _OPENER.open(url, timeout=FETCH_TIMEOUT_S) as response, destination.open("wb") as out:
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > MAX_INPUT_BYTES:
                    raise InputError(f"{field_name}: the audio at the URL is over {MAX_INPUT_BYTES} bytes.")
                out.write(chunk)
    except urllib.error.HTTPError as error:
        raise InputError(f"{field_name}: fetching the URL failed with HTTP {error.code}.") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, PrivateAddressError):
            raise InputError(f"{field_name}: the URL is refused: {reason}.") from None
        raise InputError(f"{field_name}: the URL could not be fetched ({reason}).") from None


def _decode(source: str, destination: Path, field_name: str) -> None:
    payload = source.split(",", 1)[1] if source.startswith("data:") else source
    if len(payload) * 3 // 4 > MAX_INPUT_BYTES:
        raise InputError(f"{field_name}: the base64 audio is over {MAX_INPUT_BYTES} bytes.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{field_name}: neither an http(s) URL nor valid base64 audio.") from None
    if not data:
        raise InputError(f"{field_name}: the audio is empty.")
    destination.write_bytes(data)


def pcm16_wav(samples: Sequence[int], rate: int) -> bytes:
    """Mono 16-bit ``samples`` at ``rate`` Hz as the bytes of a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return buffer.getvalue()


def fetch_audio(source: str, directory: Path, field_name: str) -> Path:
    """``source`` as a file in ``directory``; an :class:`InputError` naming ``field_name`` if unusable."""
    destination = directory / f"{field_name}.audio"
    if source.startswith(("http://", "https://")):
        _download(source, destination, field_name)
    else:
        _decode(source, destination, field_name)
    return destination
