#!/usr/bin/env bash
# Bursts into a live job: how long after each burst the job's output frontier reaches the burst's
# watermarks (the lower of its book and trade events' highest ts, minus lateness). By hand, not in
# CI: a local broker with 4 partitions, `gen` events for 5 symbols cut into 6 bursts produced 3 s
# apart, the job at `-w 2` with the given sink options; metrics polled every 50 ms.
#
#   benches/bursts.sh target/release/tampines "--out /dev/null"
#   benches/bursts.sh target/release/tampines "--out /dev/null --redis redis://127.0.0.1:24700/0"
#
# (a redis-server is started on port 24700; metrics on 24710.) A burst that waits about
# `--idle-ms` (5 s) waits on a partition that went idle, as CONTRACT section 2 says.
set -euo pipefail
T=$(realpath "$1"); SINK=$2
# Ports another run still holds would give that run's figures (its metrics, its Redis): refused.
for port in 24700 24710; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "bursts.sh: port $port is in use (an earlier run still stopping?)" >&2; exit 1
  fi
done
D=$(mktemp -d); cd "$D"
"$T" broker --partitions 4 > b.txt 2>/dev/null & BP=$!
redis-server --port 24700 --save "" --appendonly no > /dev/null & RP=$!
# The job first, while its broker still answers: stopped with the broker, it waited about 90 s
# for it, holding the metrics port, and the next run read its metrics.
stop() {
  if [ -n "${JP:-}" ]; then kill "$JP" 2>/dev/null || true; wait "$JP" 2>/dev/null || true; fi
  kill "$BP" "$RP" 2>/dev/null || true; wait 2>/dev/null || true
  rm -rf "$D"
}
trap stop EXIT
for _ in $(seq 100); do
  grep -q bootstrap= b.txt && redis-cli -p 24700 ping >/dev/null 2>&1 && break
  sleep 0.1 # polls the broker and Redis coming up, bounded by the loop
done
B=$(sed -n 's/bootstrap=//p' b.txt)
"$T" gen --symbols 5 --events 20000 --hours 0.2 --out ev.ndjson
split -n l/6 ev.ndjson burst.
# shellcheck disable=SC2086
"$T" run --brokers "$B" $SINK -w 2 --metrics-addr 127.0.0.1:24710 2> run.err & JP=$!
for c in burst.*; do
  target=$(python3 -c "
import json
m = {}
for l in open('$c'):
    e = json.loads(l); k = e['type'] == 'trade'; m[k] = max(m.get(k, 0), e['ts'])
print(min(m.values()) - 1000 - 100)")
  t0=$(date +%s.%N)
  "$T" produce "$c" --brokers "$B" 2>/dev/null
  f=0
  for _ in $(seq 200); do
    f=$(curl -s 127.0.0.1:24710/metrics | sed -n 's/^tampines_output_frontier_ms //p')
    [ -n "$f" ] && [ "$f" -ge "$target" ] && break
    sleep 0.05 # polls the frontier, bounded by the loop (10 s)
  done
  t1=$(date +%s.%N)
  echo "$c: $(python3 -c "print(round($t1 - $t0, 2))") s (frontier $f, target $target)"
  sleep 3 # the gap between bursts
done
