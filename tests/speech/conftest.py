from pathlib import Path

import pytest

from tests.speech.support import ensure_speech_python


@pytest.fixture(scope="session")
def speech_python() -> Path:
    return ensure_speech_python()
