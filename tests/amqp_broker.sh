#!/usr/bin/env bash
# amqp_broker.sh - a throwaway RabbitMQ broker for the tests, the tour and
# the benchmarks: loopback only, its own node name, ports, data and log
# directories, no system service, nothing written outside DIR.
#
#   amqp_broker.sh start DIR [HEARTBEAT]  boots a broker (or reuses the one
#                               running in DIR); prints its URL, also left
#                               in DIR/url; DIR/pid holds the beam's pid
#                               (SIGSTOP it to freeze the broker)
#   amqp_broker.sh stop DIR     stops it, and its own epmd, and
#                               removes DIR
#   amqp_broker.sh restart DIR  stops and starts the RabbitMQ application
#                               inside the node (connections drop; durable
#                               queues and persistent messages come back)
#
# Boot takes about 5 s here (Erlang), a stop 1-3 s.  Everything is bounded:
# a broker not ready in 60 s is killed and the script fails.  HEARTBEAT is
# the broker's heartbeat (seconds) offered to clients: the tests set it to
# 1 so that a client that does not keep heartbeats is disconnected fast.
set -euo pipefail
cmd=${1:?usage: amqp_broker.sh start|stop|restart DIR}
d=${2:?usage: amqp_broker.sh start|stop|restart DIR}
hb=${3:-1}
rmq=/usr/lib/rabbitmq/bin

envs() {
    export HOME="$d/home"
    export RABBITMQ_NODENAME="conc$(cat "$d/port")@localhost"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT; RABBITMQ_NODE_PORT=$(cat "$d/port")
    export RABBITMQ_DIST_PORT; RABBITMQ_DIST_PORT=$(cat "$d/dport")
    export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log"
    export RABBITMQ_PID_FILE="$d/pid" RABBITMQ_CONF_ENV_FILE=/dev/null
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_EPMD_PORT; ERL_EPMD_PORT=$(cat "$d/eport")
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

free_port() {
    python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

ready() {
    amqp-declare-queue --server 127.0.0.1 --port "$(cat "$d/port")" \
        -q conc-probe >/dev/null 2>&1
}

wait_ready() {
    local t=0
    until ready; do
        sleep 0.05
        t=$((t + 1))
        if [ $t -gt 1200 ]; then
            echo "amqp_broker.sh: broker in $d not ready in 60 s" >&2
            return 1
        fi
    done
}

case $cmd in
start)
    if [ -f "$d/url" ] && ready; then
        cat "$d/url"
        exit 0
    fi
    mkdir -p "$d/mnesia" "$d/log" "$d/home"
    # A dist port below 45535 (the default NODE_PORT+20000 breaks above).
    port=$(free_port)
    dport=$(free_port)
    eport=$(free_port)
    echo "$port" > "$d/port"
    echo "$dport" > "$d/dport"
    echo "$eport" > "$d/eport"
    # max_message_size 4 KiB under RabbitMQ's default (128 MiB), which is
    # also libconc's own limit: test_amqp_queue meets the broker's refusal
    # with a message libconc sends.
    printf 'listeners.tcp.1 = 127.0.0.1:%s\nloopback_users.guest = false\nlog.console = false\nheartbeat = %s\nmax_message_size = 134213632\n' \
        "$port" "$hb" > "$d/rabbitmq.conf"
    echo '[].' > "$d/enabled_plugins"
    # An epmd of its own, on its own port (ERL_EPMD_PORT, which the node
    # and rabbitmqctl both read): a broker that shared the host's epmd
    # lost its name when another broker's stop ended that epmd, and
    # rabbitmqctl could no longer reach it.
    envs
    epmd -port "$eport" -address 127.0.0.1 -daemon
    pgrep -f "^epmd -port $eport " > "$d/epmd" 2>/dev/null || true
    setsid "$rmq/rabbitmq-server" > "$d/log/stdout" 2>&1 < /dev/null &
    echo $! > "$d/wrapper"
    if ! wait_ready; then
        bash "$0" stop "$d" || true
        exit 1
    fi
    echo "amqp://guest:guest@127.0.0.1:$port/%2f" > "$d/url"
    cat "$d/url"
    ;;
restart)
    envs
    "$rmq/rabbitmqctl" -q stop_app >/dev/null
    "$rmq/rabbitmqctl" -q start_app >/dev/null
    wait_ready
    ;;
stop)
    [ -d "$d" ] || exit 0
    if [ -f "$d/wrapper" ]; then
        w=$(cat "$d/wrapper")
        b=$(cat "$d/pid" 2>/dev/null || true)
        [ -n "$b" ] && kill -CONT "$b" 2>/dev/null || true
        kill -TERM "$w" 2>/dev/null || true
        for _ in $(seq 200); do
            kill -0 "$w" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$w" 2>/dev/null || true
        [ -n "$b" ] && kill -KILL "$b" 2>/dev/null || true
    fi
    if [ -f "$d/epmd" ]; then
        for e in $(cat "$d/epmd"); do kill -TERM "$e" 2>/dev/null || true; done
    fi
    rm -rf "$d"
    ;;
*)
    echo "usage: amqp_broker.sh start|stop|restart DIR [HEARTBEAT]" >&2
    exit 2
    ;;
esac
