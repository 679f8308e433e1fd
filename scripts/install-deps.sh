#!/usr/bin/env bash
# Installs what Shoal needs on a Debian machine: system packages and the Python package itself.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v busybox >/dev/null 2>&1 && busybox --list >/dev/null 2>&1 && [ -x /bin/busybox -o -x /usr/bin/busybox ] || need+=(busybox-static)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)  # tests/registry: a real registry
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)                    # tests/registry: pushes and archives
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)           # tests/registry: basic auth
command -v runc >/dev/null 2>&1 || need+=(runc)   # reference engine: shoald --runtime runc, tests, bench
command -v crun >/dev/null 2>&1 || need+=(crun)   # reference engine: shoald --runtime crun, tests, bench
command -v nft >/dev/null 2>&1 || need+=(nftables)   # overlay: VIPs, routing mesh, egress
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)   # bench/overlay.py
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# busybox-static specifically: a dynamically linked busybox cannot run inside a bare image.
if ! file -L "$(command -v busybox)" 2>/dev/null | grep -q static && ! dpkg -s busybox-static >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v -e "Running pip as the 'root' user" -e "is ignored: it is neither" || true
