#!/bin/sh
# The worker container's command: make the release ready on the volume (warm: well under a
# second; cold: fetched, verified, installed once), then exec the handler from the release's
# code layer with the env's python. The image has no handler of its own, so a release without
# a code layer is refused (--require-code). Configuration comes from PODENV_* and AWS_*
# variables (docs/deploy-runpod.md).
set -eu
exec podenv boot --require-code --exec -- python -m worker.handler "$@"
