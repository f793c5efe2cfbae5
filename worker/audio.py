"""Job audio in (an http(s) URL, a ``data:`` URI or bare base64, written to a local file), and
plain WAV bytes out."""

import base64
import binascii
import io
import os
import struct
import urllib.error
import urllib.request
import wave
from collections.abc import Sequence
from pathlib import Path

MAX_INPUT_BYTES = int(os.environ.get("PODENV_MAX_INPUT_BYTES", 100 * 1024 * 1024))
FETCH_TIMEOUT_S = 60


class InputError(ValueError):
    """A job input the worker cannot use; the message names the field."""


def _download(url: str, destination: Path, field_name: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response, destination.open("wb") as out:
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
