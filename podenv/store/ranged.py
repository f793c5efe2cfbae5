"""The one way podenv reads a blob from an S3 store: ranged GETs, bounded in every way a
network can misbehave, and errors that say what the network did.

A blob is read as ranges, ``concurrency`` in flight and handed out in order. Each range
is read in small pieces straight off the socket (``read1``: a slow server cannot make one
read wait for a whole buffer), and:

* a connection that drops or ends early is retried from the last byte received, never
  from the start of the range, up to ``attempts`` tries in all, with a short backoff;
* a read that waits longer than ``read_timeout`` (the client's socket timeout) is a stall;
* a range averaging under ``min_rate`` bytes/s over a window of ``read_timeout`` seconds
  is a trickle, treated like a drop (a fresh connection may be faster);
* the whole blob must arrive by its ``deadline``, and by ``until`` (a boot's one deadline
  over its whole install) when that comes first;
* 4xx answers are final (the object, the bucket or the credentials are wrong), 5xx and
  connection failures are retried.

When a range fails for good, the others stop at their next read and the error names the
object, the byte range, what happened on the tries and how much had arrived, e.g. "the
store dropped the connection (4 tries); 3.1 MiB of the 8.0 MiB range had arrived".
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from podenv.errors import StoreError
from podenv.progress import Progress, human_bytes
from podenv.store.backend import TransferConfig

# Bytes asked of the socket per read: small enough that progress is seen often.
_PIECE = 256 << 10
_BACKOFF = (0.5, 1.0, 2.0, 4.0)


class _Failed(Exception):
    """One try of a range went wrong; ``what`` says how, in words for the final error."""

    def __init__(self, what: str, final: bool = False) -> None:
        super().__init__(what)
        self.what = what
        self.final = final


class _Cancelled(Exception):
    """Another range failed, or the consumer went away: stop quietly."""


@dataclass
class _Range:
    start: int
    end: int
    data: bytearray

    @property
    def wanted(self) -> int:
        return self.end - self.start

    @property
    def next_byte(self) -> int:
        return self.start + len(self.data)


class RangedReader:
    """Reads one object as ordered chunks; see the module's docstring for the bounds."""

    def __init__(
        self,
        get_range: Callable[[int, int], Any],
        describe: str,
        size: int,
        transfer: TransferConfig,
        progress: Progress | None = None,
    ) -> None:
        # ``get_range(start, end)`` returns a botocore GetObject response for bytes start..end-1.
        self._get_range = get_range
        self._describe = describe
        self._size = size
        self._transfer = transfer
        self._progress = progress
        self._deadline = time.monotonic() + transfer.deadline
        self._deadline_words = f"the {transfer.deadline:.0f}s deadline"
        if transfer.until is not None and transfer.until < self._deadline:
            self._deadline = transfer.until
            self._deadline_words = "the install's deadline (PODENV_STORE_INSTALL_DEADLINE)"
        self._cancel = threading.Event()
        self._failure: StoreError | None = None

    def chunks(self) -> Iterator[bytes]:
        step = self._transfer.range_size
        spans = iter((start, min(start + step, self._size)) for start in range(0, self._size, step))
        workers = self._transfer.concurrency
        with ThreadPoolExecutor(workers, thread_name_prefix="podenv-get") as pool:
            in_flight: deque[Future[bytes]] = deque()
            try:
                for _ in range(workers * 2):
                    if (span := next(spans, None)) is not None:
                        in_flight.append(pool.submit(self._read_range, *span))
                while in_flight:
                    try:
                        chunk = in_flight.popleft().result()
                    except _Cancelled:
                        assert self._failure is not None  # only a failed range cancels the others
                        raise self._failure from None
                    if (span := next(spans, None)) is not None:
                        in_flight.append(pool.submit(self._read_range, *span))
                    if self._progress is not None:
                        self._progress.update(len(chunk))
                    yield chunk
            finally:
                self._cancel.set()
                for future in in_flight:
                    future.cancel()

    # One range, retried from its last good byte

    def _read_range(self, start: int, end: int) -> bytes:
        span = _Range(start, end, bytearray())
        tries: list[str] = []
        while len(span.data) < span.wanted:
            if self._cancel.is_set():
                raise _Cancelled()
            try:
                self._try_once(span)
            except _Failed as failure:
                tries.append(failure.what)
                if failure.final or len(tries) >= self._transfer.attempts:
                    raise self._error(span, tries) from None
                self._wait(_BACKOFF[min(len(tries), len(_BACKOFF)) - 1], span, tries)
        return bytes(span.data)

    def _wait(self, seconds: float, span: _Range, tries: list[str]) -> None:
        if time.monotonic() + seconds > self._deadline:
            tries.append(f"{self._deadline_words} came before another try")
            raise self._error(span, tries)
        if self._cancel.wait(seconds):
            raise _Cancelled()

    def _error(self, span: _Range, tries: list[str]) -> StoreError:
        error = self._describe_failure(span, tries)
        if self._failure is None:
            self._failure = error
        self._cancel.set()
        return error

    def _describe_failure(self, span: _Range, tries: list[str]) -> StoreError:
        what = tries[-1]
        repeated = f" ({len(tries)} tries)" if len(tries) > 1 and len(set(tries)) == 1 else ""
        if len(set(tries)) > 1:
            what = ", then ".join(dict.fromkeys(tries))
        arrived = f"{human_bytes(len(span.data))} of the {human_bytes(span.wanted)} range had arrived"
        return StoreError(
            f"reading {self._describe} (bytes {span.start}-{span.end - 1}) failed: the store {what}"
            f"{repeated}, when {arrived}",
            fix="check the network to the store (PODENV_STORE_READ_TIMEOUT, PODENV_STORE_DEADLINE and "
            "PODENV_STORE_INSTALL_DEADLINE bound the waits).",
        )

    def _try_once(self, span: _Range) -> None:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        try:
            response = self._get_range(span.next_byte, span.end)
        except ClientError as error:
            raise self._answer(error) from None
        except EndpointConnectionError:
            raise _Failed("could not be connected to") from None
        except ConnectionClosedError:  # closed before its answer: a server gone mid-request
            raise _Failed(self._dropped(span)) from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise _Failed(f"did not answer within {self._transfer.read_timeout:.0f}s") from None
        except BotoCoreError as error:
            raise _Failed(f"failed ({type(error).__name__})") from None
        self._check_answer(response, span)
        self._read_body(response["Body"], span)

    def _answer(self, error: Any) -> _Failed:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return _Failed(f"answered {code or status}", final=status < 500)

    def _check_answer(self, response: dict[str, Any], span: _Range) -> None:
        expected = f"bytes {span.next_byte}-{span.end - 1}/"
        content_range = str(response.get("ContentRange", ""))
        if not content_range.startswith(expected):
            response["Body"].close()
            asked = f"bytes={span.next_byte}-{span.end - 1}"
            raise _Failed(f"answered with range '{content_range}' for '{asked}'", final=True)

    def _read_body(self, body: Any, span: _Range) -> None:
        from urllib3.exceptions import ProtocolError, ReadTimeoutError

        # botocore's StreamingBody.read(n) waits for n bytes; its urllib3 response's read1
        # returns what one socket read gives, so a trickle is seen as one.
        raw = body._raw_stream
        window = (time.monotonic(), len(span.data))
        try:
            while len(span.data) < span.wanted:
                if self._cancel.is_set():
                    raise _Cancelled()
                piece = raw.read1(min(_PIECE, span.wanted - len(span.data)), decode_content=False)
                if not piece:
                    raise _Failed(self._dropped(span))
                span.data += piece
                window = self._check_pace(window, span)
        except ReadTimeoutError:
            raise _Failed(f"stalled: no byte for {self._transfer.read_timeout:.0f}s") from None
        except (ProtocolError, OSError):
            raise _Failed(self._dropped(span)) from None
        finally:
            body.close()

    def _dropped(self, span: _Range) -> str:
        return "dropped the connection"

    def _check_pace(self, window: tuple[float, int], span: _Range) -> tuple[float, int]:
        now = time.monotonic()
        if now > self._deadline:
            raise _Failed(f"did not deliver the blob within {self._deadline_words}", final=True)
        since, received = window
        elapsed = now - since
        if elapsed < self._transfer.read_timeout:
            return window
        rate = (len(span.data) - received) / elapsed
        if rate < self._transfer.min_rate:
            # The same words on every try, so that repeated trickles read as one cause.
            minimum = human_bytes(self._transfer.min_rate)
            raise _Failed(f"trickled: under {minimum}/s over {self._transfer.read_timeout:.0f}s")
        return now, len(span.data)
