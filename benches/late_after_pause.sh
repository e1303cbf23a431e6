#!/usr/bin/env bash
# Late events in the burst after a pause longer than `--idle-ms` (README, Known limitations). By
# hand, not in CI: for each pause, a local broker with 4 partitions and a job at `-w 2` (defaults:
# lateness 1 s, idle 5 s) read 10,000 `gen` events for 10 symbols, produced in two halves with
# the pause between them, and the script prints the events the job counted late (its closing
# line, after SIGINT). The halves are produced
# - `backlog`: at once, spanning SPAN_S seconds of market time (default 360: each half's 3 minutes
#   of event time reach the broker within a few dozen ms, as when a producer flushes what it
#   buffered), or
# - `live`: at the pace of their `ts` (14.4 s in all; each event sent when its `ts`, rewritten to
#   the wall clock, comes).
#
#   benches/late_after_pause.sh target/release/tampines 3 8 12 20
#   MODES=live SPAN_S=14.4 benches/late_after_pause.sh target/release/tampines 8
set -euo pipefail
T=$(realpath "$1"); shift
PAUSES=("${@:-8}")
# Port 24720 another run still holds would give that run's figures: refused.
if (exec 3<>"/dev/tcp/127.0.0.1/24720") 2>/dev/null; then
  echo "late_after_pause.sh: port 24720 is in use (an earlier run still stopping?)" >&2; exit 1
fi
D=$(mktemp -d); cd "$D"
stop() {
  for p in ${JP:-} ${BP:-}; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  JP=; BP=
}
trap 'stop; rm -rf "$D"' EXIT
cat > pace.py <<'PY'
import re, sys, time
# Writes each line when its ts comes, ts rewritten to the wall clock (first line: now).
first = start = None
for line in open(sys.argv[1]):
    m = re.search(r'"ts":(\d+)', line)
    ts = int(m.group(1))
    if first is None:
        first, start = ts, time.time() * 1000
    due = start + ts - first
    wait = due - time.time() * 1000
    if wait > 0:
        time.sleep(wait / 1000)
    sys.stdout.write(line[:m.start(1)] + str(int(due)) + line[m.end(1):])
    sys.stdout.flush()
PY
events() {
  "$T" gen --symbols 10 --events 10000 --hours "$(python3 -c "print($1 / 3600)")" --seed 1 \
    --out ev.ndjson 2>/dev/null
  head -n 5000 ev.ndjson > half.1; tail -n +5001 ev.ndjson > half.2
}
read_total() {
  curl -s 127.0.0.1:24720/metrics | awk '/^tampines_input_read_total/ { s += $2 } END { print s + 0 }'
}
wait_read() {
  for _ in $(seq 600); do
    [ "$(read_total)" -ge "$1" ] && return
    sleep 0.05 # polls the job's metrics, bounded by the loop (30 s)
  done
  echo "late_after_pause.sh: the job did not read $1 events" >&2; exit 1
}
for mode in ${MODES:-backlog live}; do
  if [ "$mode" = backlog ]; then events "${SPAN_S:-360}"; else events 14.4; fi
  for pause in "${PAUSES[@]}"; do
    "$T" broker --partitions 4 > b.txt 2>/dev/null & BP=$!
    for _ in $(seq 100); do
      grep -q bootstrap= b.txt && break
      sleep 0.1 # polls the broker coming up, bounded by the loop
    done
    B=$(sed -n 's/bootstrap=//p' b.txt)
    "$T" run --brokers "$B" --out /dev/null -w 2 --metrics-addr 127.0.0.1:24720 2> run.err & JP=$!
    for half in 1 2; do
      if [ "$mode" = backlog ]; then
        "$T" produce --brokers "$B" "half.$half" 2>/dev/null
      else
        python3 pace.py "half.$half" | "$T" produce --brokers "$B" /dev/stdin 2>/dev/null
      fi
      wait_read $((5000 * half))
      [ "$half" = 1 ] && sleep "$pause" # the pause
    done
    kill -INT "$JP"; wait "$JP" || true; JP=
    kill "$BP"; wait "$BP" 2>/dev/null || true; BP=
    echo "$mode, pause $pause s: $(grep -o 'late [0-9]*' run.err | tail -1) of 5000"
  done
done
