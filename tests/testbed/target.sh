#!/bin/sh
# One SSH reset target for the tests: a real OpenSSH sshd with real PAM and chpasswd, run as
# PID 1 of fresh mount/PID/UTS namespaces with a private /etc, /home, /root, /run and /var/log.
# The machine's own accounts are never touched: every write lands in $STATE/upper.
#
# Usage (by testkit/src/sshd.rs, as root):
#   unshare --mount --uts --pid --fork --kill-child --mount-proc --propagation private \
#     tests/testbed/target.sh STATE TESTBED
# STATE holds upper/ (the private /etc: passwd, shadow, group, gshadow, ssh/, pam.d/, sudoers,
# hosts, hostname, prepared by the harness), work/ and home/. TESTBED is the folder made by
# scripts/testbed-deps.sh (Debian's openssh-server and sudo, extracted).
set -eu
STATE=$1
TESTBED=$2

mount -t overlay overlay -o "lowerdir=/etc,upperdir=$STATE/upper,workdir=$STATE/work" /etc
# sshd, sudo and sudo's plugins appear at the paths they were built for.
mkdir -p "$STATE/usr-upper" "$STATE/usr-work"
mount -t overlay overlay \
  -o "lowerdir=$TESTBED/usr:/usr,upperdir=$STATE/usr-upper,workdir=$STATE/usr-work" /usr
mount -t tmpfs tmpfs /run
mkdir -m 0755 /run/sshd
mount --bind "$STATE/home" /home
mount -t tmpfs -o mode=0700 tmpfs /root
mount -t tmpfs tmpfs /var/log
hostname "$(cat /etc/hostname)"
exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
