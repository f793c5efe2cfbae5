#!/bin/sh
# The worker container's command: make the release ready on the volume (warm: well under a
# second; cold: fetched, verified, installed once), then exec the handler with the env's
# python. Configuration comes from PODENV_* and AWS_* variables (docs/deploy-runpod.md).
set -eu
exec podenv boot --exec -- python -m worker.handler "$@"
