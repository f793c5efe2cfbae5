"""What env names, versions and channel names may look like.

They become parts of store keys and of paths on the volume, so they are kept to a safe,
portable alphabet. The manifest schema states the same patterns (a test keeps them equal).
"""

import re

from podenv.errors import PodenvError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$"

_RULES = {
    "env name": (re.compile(NAME_PATTERN), "lowercase letters, digits, '-' and '_'"),
    "channel": (re.compile(NAME_PATTERN), "lowercase letters, digits, '-' and '_'"),
    "version": (re.compile(VERSION_PATTERN), "letters, digits, '.', '_', '+' and '-'"),
}


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid ``kind`` ('env name', 'channel', 'version')."""
    pattern, alphabet = _RULES[kind]
    if not pattern.match(value):
        raise PodenvError(
            f"'{value}' is not a valid {kind}: use 1 to 63 characters of {alphabet}, "
            "starting with a letter or digit."
        )
    return value
