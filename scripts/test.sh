#!/usr/bin/env bash
# The test command: installs what the tests need, then runs them all (unit, simulation,
# runtime and integration). Needs root for namespaces, cgroups and overlayfs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
exec python3 -m pytest -q -p no:cacheprovider "$@"
