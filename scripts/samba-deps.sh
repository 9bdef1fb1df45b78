#!/usr/bin/env bash
# Installs what the Active Directory connector tests need without installing anything on this
# machine: Debian's Samba (an AD domain controller), its provisioning tools and the LDAP
# clients, downloaded and extracted into a private folder. The tests provision a domain from
# them and run it inside mount/PID/UTS namespaces with the folder's /usr overlaid on the
# machine's (testkit/src/samba_dc.rs); nothing under /etc, /var or /usr is touched.
# Idempotent. Prints the folder.
set -euo pipefail

DEST="${LOCKSTEP_SAMBA_DIR:-$HOME/.cache/lockstep-samba}"
if [ -x "$DEST/usr/sbin/samba" ] && [ -x "$DEST/usr/bin/samba-tool" ] \
  && [ -x "$DEST/usr/bin/ldapsearch" ]; then
  echo "$DEST"
  exit 0
fi
for tool in apt-get dpkg unshare openssl; do
  command -v "$tool" >/dev/null || { echo "samba-deps: '$tool' is required" >&2; exit 1; }
done

# What installing these would pull in beyond what the machine has (24 packages, 13 MB here).
wanted=(samba samba-dsdb-modules samba-vfs-modules samba-ad-provision ldap-utils python3-ldap)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"   # apt downloads as _apt when it can
(
  cd "$tmp"
  list() { apt-get install -s --no-install-recommends "${wanted[@]}" 2>/dev/null | awk '/^Inst /{print $2}'; }
  pkgs=$(list)
  if [ -z "$pkgs" ] || ! apt-get download $pkgs >/dev/null 2>&1; then
    apt-get update -qq
    pkgs=$(list)
    [ -n "$pkgs" ] || { echo "samba-deps: apt lists nothing to fetch for ${wanted[*]}" >&2; exit 1; }
    apt-get download $pkgs >/dev/null
  fi
)
rm -rf "$DEST.new"
mkdir -p "$DEST.new"
for deb in "$tmp"/*.deb; do
  dpkg -x "$deb" "$DEST.new"
done
[ -x "$DEST.new/usr/sbin/samba" ] \
  || { echo "samba-deps: the packages did not hold usr/sbin/samba" >&2; exit 1; }
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
echo "$DEST"
