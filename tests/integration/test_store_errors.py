"""Every way of failing to use a store ends in one clear sentence, with no secret in it."""

import socket

import pytest

from podenv.errors import PodenvError, StoreError
from podenv.store import open_store


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _one_sentence(message: str) -> None:
    assert "\n" not in message
    assert message.endswith(".")
    assert "Traceback" not in message


def test_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)

    with pytest.raises(StoreError) as caught:
        open_store("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9")

    assert "AWS_ACCESS_KEY_ID" in str(caught.value)
    _one_sentence(str(caught.value))


def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNREACHABLE0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unreachable-secret-value")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = open_store("s3://bucket/prefix", endpoint_url=endpoint)

    with pytest.raises(StoreError) as caught:
        store.get_release("tts", "1.0.0")

    message = str(caught.value)
    assert f"cannot reach the store at s3://bucket/prefix (endpoint {endpoint})" in message
    assert "unreachable-secret-value" not in message
    _one_sentence(message)


def test_wrong_secret_is_refused_without_echoing_it(s3_environment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-d3adb33f")
    store = open_store("s3://podenv/prefix")

    with pytest.raises(StoreError) as caught:
        store.get_release("tts", "1.0.0")

    message = str(caught.value)
    assert "refused the credentials" in message
    assert "wrong-secret-d3adb33f" not in message
    assert s3_environment["AWS_ACCESS_KEY_ID"] not in message
    _one_sentence(message)


def test_missing_bucket(s3_environment) -> None:
    store = open_store("s3://no-such-bucket-here/prefix")

    with pytest.raises(StoreError, match="bucket 'no-such-bucket-here' does not exist") as caught:
        store.put_release("tts", "1.0.0", b"{}")

    _one_sentence(str(caught.value))


@pytest.mark.parametrize("url", ["http://example/x", "bucket/prefix", "s3:///prefix"])
def test_bad_store_urls(url: str, s3_environment) -> None:
    with pytest.raises(PodenvError) as caught:
        open_store(url)
    _one_sentence(str(caught.value))


def test_missing_store_directory(tmp_path) -> None:
    with pytest.raises(StoreError, match="does not exist") as caught:
        open_store(f"file://{tmp_path}/absent")
    _one_sentence(str(caught.value))


@pytest.mark.parametrize("name", ["../etc", "Upper", "", "a/b"])
def test_names_that_could_escape_their_key_are_refused(name: str, tmp_path) -> None:
    store = open_store(f"file://{tmp_path}")
    with pytest.raises(PodenvError, match="not a valid env name"):
        store.put_release(name, "1.0.0", b"{}")
    assert list(tmp_path.iterdir()) == []
