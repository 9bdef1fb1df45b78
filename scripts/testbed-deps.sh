#!/usr/bin/env bash
# Installs what the SSH reset tests need without touching this machine's own /etc or accounts:
# OpenSSH's sshd and sudo (and sshpass, for the benchmark's baseline), extracted from Debian
# packages into a private folder. The tests run
# them inside mount/PID namespaces with a private /etc (testkit/src/sshd.rs), never on
# the host. Idempotent. Prints the folder.
set -euo pipefail

DEST="${LOCKSTEP_TESTBED_DIR:-$HOME/.cache/lockstep-testbed}"
if [ -x "$DEST/usr/sbin/sshd" ] && [ -x "$DEST/usr/bin/sudo" ] && [ -x "$DEST/usr/bin/sshpass" ]; then
  echo "$DEST"
  exit 0
fi
for tool in apt-get dpkg unshare ssh-keygen openssl chpasswd ss; do
  command -v "$tool" >/dev/null || { echo "testbed-deps: '$tool' is required" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"   # apt downloads as _apt when it can
(
  cd "$tmp"
  # sshpass only drives the benchmark's baseline (the loop an admin would write).
  apt-get download openssh-server sudo sshpass >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get download openssh-server sudo sshpass >/dev/null; }
)
rm -rf "$DEST.new"
mkdir -p "$DEST.new"
for deb in "$tmp"/*.deb; do
  dpkg -x "$deb" "$DEST.new"
done
# Only usr/ is used (overlaid on /usr inside each target's namespace).
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
"$DEST/usr/sbin/sshd" -V 2>&1 | head -1 >&2
echo "$DEST"
