#!/usr/bin/env bash
# The demo tour: builds libconc and runs every example program - the seed
# documents' Python programs ported to C - in order, with its narrative.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build/tour -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCONC_BUILD_TESTS=OFF -DCONC_BUILD_BENCH=OFF >/dev/null
cmake --build build/tour -j"$(nproc)" >/dev/null
# Examples run in a scratch folder: some write files (the ticket office's
# db.txt).
work=$(mktemp -d)
redis_pid=""
amqp_boot=""
cleanup() {
    if [ -n "$amqp_boot" ]; then
        wait "$amqp_boot" 2>/dev/null || true
        bash tests/amqp_broker.sh stop "$work/amqp" >/dev/null 2>&1 || true
    fi
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
# The examples that share objects through Redis (examples/*redis*.c) get a
# throwaway redis-server of their own: loopback, a free port, no
# persistence, its files in the scratch folder; stopped at the end.
if ls examples/*redis*.c >/dev/null 2>&1 && [ -z "${CONC_REDIS_URL:-}" ]; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$work/redis"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --daemonize no --dir "$work/redis" --logfile "$work/redis/log" &
    redis_pid=$!
    for _ in $(seq 200); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.025
    done
    export CONC_REDIS_URL="redis://127.0.0.1:$port/0"
fi
# The example that runs one program on every backend (*any_backend*)
# also gets a throwaway RabbitMQ broker (tests/amqp_broker.sh: loopback,
# its own ports and node name, files in the scratch folder), booted in
# the background while the first examples run (5 s on an idle machine);
# without rabbitmq-server, or a libconc built without rabbitmq-c, that
# run is skipped with a note saying how to get it.
if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] &&
    grep -q '^CONC_AMQP:STRING=ON' build/tour/CMakeCache.txt; then
    bash tests/amqp_broker.sh start "$work/amqp" >/dev/null 2>&1 &
    amqp_boot=$!
fi
for src in examples/*.c; do
    name=$(basename "$src" .c)
    echo
    echo "=================================================================="
    echo "== $name"
    # The file's first comment block is the narration.
    awk 'NR == 1 { sub(/^\/\* ?/, "") }
         { done = sub(/ *\*\/.*$/, ""); sub(/^ \* ?/, ""); print "   " $0 }
         done { exit }' "$src"
    echo "------------------------------------------------------------------"
    if [[ $name != *any_backend* ]]; then
        (cd "$work" && timeout 120 "$OLDPWD/build/tour/examples/$name")
        continue
    fi
    amqp_url=""
    if [ -n "$amqp_boot" ] && wait "$amqp_boot" && [ -f "$work/amqp/url" ]; then
        amqp_url=$(cat "$work/amqp/url")
    fi
    amqp_boot=${amqp_boot:+done}
    places=("")
    [ -n "${CONC_REDIS_URL:-}" ] && places+=("$CONC_REDIS_URL")
    [ -n "$amqp_url" ] && places+=("$amqp_url")
    for where in "${places[@]}"; do
        echo "-- location: ${where:-shared memory}"
        (cd "$work" && timeout 120 "$OLDPWD/build/tour/examples/$name" "$where")
    done
    if [ -z "$amqp_url" ]; then
        echo "-- RabbitMQ run skipped: install rabbitmq-server and"
        echo "   librabbitmq-dev (scripts/deps.sh) and build with -DCONC_AMQP=ON"
    fi
done
echo
echo "Tour complete: every example ran."
