#!/bin/sh
# The image's entrypoint: every role is `sluice ROLE ...` (the manifests in deploy/kubernetes/ pass the
# role and its flags as args). Writable paths default to /tmp, for a read-only root file system.
set -eu
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/numba}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-/tmp/matplotlib}"
export SLUICE_STATE_DIR="${SLUICE_STATE_DIR:-/tmp/sluice}"
exec sluice "$@"
