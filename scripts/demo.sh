#!/usr/bin/env bash
# The demo: one node on a private state dir, a busybox image, the hello stack, and where its
# tasks run. Everything it starts is stopped and removed at the end (also on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

work=$(mktemp -d /tmp/shoal-demo.XXXXXX)
export SHOAL_HOST="unix://$work/shoal.sock"
cgroup="shoal-demo-$$"
shoald_pid=""

cleanup() {
  set +e
  echo; echo "== cleaning up"
  shoal stack rm hello >/dev/null 2>&1
  for _ in $(seq 1 60); do
    [ -z "$(ls -A "$work/state/containers" 2>/dev/null)" ] && break
    sleep 0.5
  done
  [ -n "$shoald_pid" ] && kill "$shoald_pid" 2>/dev/null && wait "$shoald_pid" 2>/dev/null
  python3 - "$work" "$cgroup" <<'PY'
import sys
from pathlib import Path
from tests.integration.harness import Daemon
d = Daemon(root=Path(sys.argv[1]), cgroup_parent=sys.argv[2])
d.state_dir = Path(sys.argv[1]) / "state"
d.cleanup()
PY
}
trap cleanup EXIT

echo "== starting shoald (state in $work/state)"
shoald --state-dir "$work/state" --socket "$work/shoal.sock" --cgroup-parent "$cgroup" --hostname demo-node \
  >"$work/shoald.log" 2>&1 &
shoald_pid=$!
for _ in $(seq 1 100); do [ -S "$work/shoal.sock" ] && break; sleep 0.1; done

echo "== shoal swarm init";            shoal swarm init
echo "== shoal node ls";               shoal node ls
python3 scripts/make-busybox-image.py "$work/busybox.tar"
echo "== shoal image import";          shoal image import "$work/busybox.tar" busybox:latest
echo "== shoal stack deploy hello";    shoal stack deploy -c stacks/hello.yml hello
for _ in $(seq 1 60); do
  shoal stack services hello | grep -q "3/3" && shoal stack services hello | grep -q "1/1" && break
  sleep 0.5
done
echo "== shoal stack services hello";  shoal stack services hello
echo "== shoal stack ps hello";        shoal stack ps hello
sleep 1
echo "== what the containers print"
for f in "$work"/state/containers/*/*.log; do [ -s "$f" ] && tail -n 1 "$f"; done
