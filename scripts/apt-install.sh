#!/usr/bin/env bash
# apt-install.sh PACKAGE... - apt-get install, as root, without starting
# any service a package brings: redis-server's package would start a
# system redis on port 6379 (and rabbitmq-server's a broker), and
# libconc's tests, tour and benchmarks start throwaway servers of their
# own on free loopback ports instead.  A policy-rc.d that answers 101
# ("action forbidden") is what invoke-rc.d and deb-systemd-invoke ask
# before they start anything; it is put in place only for this install,
# and only where the machine has none of its own.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq "$@" >/dev/null
