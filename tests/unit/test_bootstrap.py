"""The oldest bootstrap a release needs (podenv.bootstrap): recorded by the build, read by boot
before anything else in the manifest, refused in one sentence with the fix."""

import pytest

from podenv import __version__
from podenv.bootstrap import CODE_LAYER_BOOTSTRAP, check_bootstrap, needed_bootstrap, version_key
from podenv.errors import ManifestError


def test_a_release_with_a_code_layer_needs_the_podenv_that_installs_one() -> None:
    assert needed_bootstrap([{"kind": "env"}, {"kind": "code"}]) == CODE_LAYER_BOOTSTRAP
    assert version_key(needed_bootstrap([{"kind": "env"}])) < version_key(CODE_LAYER_BOOTSTRAP)
    assert version_key(__version__) >= version_key(CODE_LAYER_BOOTSTRAP)


def test_an_older_bootstrap_refuses_in_one_line_with_the_fix() -> None:
    document = {"name": "demo", "version": "2.0.0", "bootstrap": {"podenv": "0.2.0"}}
    with pytest.raises(ManifestError) as refused:
        check_bootstrap(document, running="0.1.9")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("release demo 2.0.0 needs podenv 0.2.0 or newer to boot")
    assert "this worker image has podenv 0.1.9" in message
    fix = refused.value.fix or ""
    assert "worker/Dockerfile" in fix and "podenv deploy" in fix


def test_a_new_enough_bootstrap_and_an_old_release_pass() -> None:
    check_bootstrap({"bootstrap": {"podenv": "0.2"}}, running="0.2.0")
    check_bootstrap({"bootstrap": {"podenv": "0.2.0"}}, running="0.10.0")  # numbers, not text
    check_bootstrap({"name": "demo", "schema_version": 1}, running="0.1.0")


@pytest.mark.parametrize("garbled", ["", "latest", "1.2.3.4", "0.2.0\n", 2])
def test_a_garbled_requirement_is_one_line(garbled: object) -> None:
    with pytest.raises(ManifestError, match=r"at \$\.bootstrap\.podenv"):
        check_bootstrap({"bootstrap": {"podenv": garbled}}, running="9.0.0")
