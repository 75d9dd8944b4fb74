#!/usr/bin/env bash
# The throughput cost of Redis persistence (issue 9): the `pairs` load test against a release
# sealpost on a private Postgres cluster and a private Redis per run, with `appendonly no`,
# `appendfsync everysec` (what deploy/ ships) and `appendfsync always`, interleaved, RUNS
# rounds. Never touches the machine's shared Postgres or Redis. Prints one line per run.
#   loadtests/durability.sh [RUNS] [-- extra sealpost-loadtest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shift || true
[ "${1:-}" = "--" ] && shift
extra=("$@")
[ ${#extra[@]} -eq 0 ] && extra=(--pairs 50 --inflight 4 --seconds 10)

cargo build --release -q --bin sealpost -p sealpost --bin sealpost-loadtest -p sealpost-loadtests
work=$(mktemp -d /tmp/sealpost-durability.XXXXXX)
chmod 755 "$work"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
server_pid= redis_pid=
cleanup() {
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill -9 "$redis_pid" 2>/dev/null || true
  as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pg"
pg_port=$(free_port)
as_pg "$pgbin/initdb" -D "$work/pg/data" -U postgres -A trust --no-instructions >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null

for run in $(seq 1 "$runs"); do
  for mode in no everysec always; do
    db="bench_${mode}_$run"
    as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres "$db"
    rdir="$work/redis-$mode-$run"; mkdir -p "$rdir"
    rport=$(free_port)
    if [ "$mode" = no ]; then aof=(--appendonly no); else aof=(--appendonly yes --appendfsync "$mode"); fi
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$rdir" --save "" "${aof[@]}" \
      --logfile "$rdir/redis.log" & redis_pid=$!
    api=$(free_port); admin=$(free_port)
    SEALPOST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/$db" \
    SEALPOST_REDIS_URL="redis://127.0.0.1:$rport" SEALPOST_RATE_LIMITS=off \
    SEALPOST_LISTEN="127.0.0.1:$api" SEALPOST_ADMIN_LISTEN="127.0.0.1:$admin" \
      target/release/sealpost serve 2>"$work/server.log" & server_pid=$!
    until curl -sf "http://127.0.0.1:$admin/health/ready" >/dev/null; do sleep 0.2; done
    line=$(target/release/sealpost-loadtest --url "http://127.0.0.1:$api" --scenario pairs \
      "${extra[@]}" 2>&1 | grep -E '^\| *pairs delivered' || true)
    echo "run $run appendonly=$mode: $line"
    kill -9 "$server_pid" "$redis_pid"; wait "$server_pid" "$redis_pid" 2>/dev/null || true
    server_pid= redis_pid=
  done
done
