#!/usr/bin/env bash
# The multi-host demo, on one machine: 1 manager + 2 workers, each in its own network namespace
# with its own address and shoald (`shoal dev up`), joined with real join tokens; a busybox
# image on every node, stacks/hello.yml deployed from m1, and where its tasks run.
# Everything is removed at the end, also on Ctrl-C or an error (`shoal dev down`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

# `pip install -e` puts `shoal` on PATH; where it does not (a pyenv without rehash), use the module.
command -v shoal >/dev/null 2>&1 || shoal() { python3 -m cli.main "$@"; }

name="demo$$"
work=$(mktemp -d /tmp/shoal-demo-cluster.XXXXXX)
dev() { shoal dev "$1" --name "$name" "${@:2}"; }
on() { local node=$1; shift; shoal dev exec --name "$name" "$node" -- "$@"; }

cleanup() {
  set +e
  echo; echo "== shoal dev down"
  shoal dev down --name "$name"
  rm -rf "$work"
}
trap cleanup EXIT

echo "== shoal dev up --managers 1 --workers 2"
dev up --managers 1 --workers 2

echo "== shoal node ls (on m1)"
on m1 shoal node ls

python3 scripts/make-busybox-image.py "$work/busybox.tar"
for node in m1 w1 w2; do
  echo "== shoal image import on $node"
  on "$node" shoal image import "$work/busybox.tar" busybox:latest
done

echo "== shoal stack deploy -c stacks/hello.yml hello (on m1)"
on m1 shoal stack deploy -c stacks/hello.yml hello
for _ in $(seq 1 60); do
  services=$(on m1 shoal stack services hello)
  grep -q "3/3" <<<"$services" && grep -q "1/1" <<<"$services" && break
  sleep 0.5
done
echo "== shoal stack services hello"; on m1 shoal stack services hello
echo "== shoal stack ps hello (the NODE column: where each task runs)"
on m1 shoal stack ps hello
echo "== shoal dev ls"
dev ls
sleep 1
echo "== what the containers print, node by node"
for node in m1 w1 w2; do
  for f in "${SHOAL_DEV_ROOT:-/tmp/shoal-dev}/$name/$node"/state/containers/*/*.log; do
    [ -s "$f" ] && echo "$node: $(tail -n 1 "$f")"
  done
done
