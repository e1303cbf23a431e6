#!/usr/bin/env python3
"""A downstream strategy reading Tampines' results from Redis (the Python twin of strategy.rs).

It follows `{prefix}:updates` (one stream entry per published progress mark) and, for each new
entry (the newest, when several arrived at once), reads ONE consistent snapshot: the frontier, the symbol's resolution-1 book, its ticker and its
newest 1-minute candles inside MULTI/EXEC. The job writes each mark atomically, so the four values
always belong to the same progress mark. One line per snapshot:

    frontier=T symbol=EX:SYM bid=.. ask=.. status=.. spread=.. change_24h=.. change_pct=.. last_closed_1m=OPEN_TIME:O/H/L/C/V

`status` is the book's: trade on `ok` only (`stale`: a sequence gap or no snapshot yet, until
the next snapshot; `crossed`: bid >= ask). At its start it shows the state as it is, if a job
has written one. It follows through Redis restarts (reconnecting, from the last entry read; a
failure at its start is not retried), and on its end (`--count`, an error or Ctrl-C) says on
stderr the stream id to resume after (`--from ID`).

Needs redis-py (Debian: apt-get install python3-redis; or pip install redis).

    python3 examples/strategy.py --redis redis://127.0.0.1:6379 --symbol demo:S000USDT
"""

import argparse
import json
import sys
import time
from decimal import Decimal, InvalidOperation

import redis


def snapshot(r, prefix, symbol):
    """Frontier, book, ticker and the two newest 1m candles, read in one MULTI/EXEC."""
    pipe = r.pipeline(transaction=True)
    pipe.get(f"{prefix}:frontier")
    pipe.get(f"{prefix}:book:{symbol}:1")
    pipe.get(f"{prefix}:ticker:{symbol}")
    pipe.zrange(f"{prefix}:candles:{symbol}:1m", -2, -1)
    frontier, book, ticker, candles = pipe.execute()
    load = lambda t: json.loads(t) if t is not None else None
    return frontier, load(book), load(ticker), [json.loads(c) for c in candles]


def text(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return json.dumps(v)


def best(book, side):
    levels = (book or {}).get(side) or []
    return levels[0][0] if levels else None


def render(symbol, frontier, book, ticker, candles):
    bid, ask = best(book, "bids"), best(book, "asks")
    spread = "-"
    if bid is not None and ask is not None:
        try:
            spread = format((Decimal(ask) - Decimal(bid)).normalize(), "f")
        except InvalidOperation:
            pass
    change = text(ticker.get("change")) if ticker else "-"
    pct = text(ticker.get("change_pct")) if ticker else "-"
    closed = "-"
    for c in reversed(candles):
        if c.get("closed") is True:
            closed = "{}:{}/{}/{}/{}/{}".format(
                c["open_time"], text(c["open"]), text(c["high"]), text(c["low"]),
                text(c["close"]), text(c["volume"]))
            break
    status = text((book or {}).get("status"))
    return (f"frontier={frontier if frontier is not None else '-'} symbol={symbol} "
            f"bid={bid or '-'} ask={ask or '-'} status={status} spread={spread} "
            f"change_24h={change} change_pct={pct} last_closed_1m={closed}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--prefix", default="tampines")
    ap.add_argument("--symbol", default="demo:S000USDT", help="EXCHANGE:SYMBOL")
    ap.add_argument("--from", dest="start", default="$",
                    help="stream id to start after: $ = new updates only, 0 = oldest kept")
    ap.add_argument("--count", type=int, default=None, help="stop after N snapshots")
    a = ap.parse_args()
    r = redis.Redis.from_url(a.redis, decode_responses=True)
    stream, seen = f"{a.prefix}:updates", 0
    state = {"last": a.start}
    try:
        # The state as it is now, if a job has written one (a quiet or finished job shows it too).
        # The stream id first: an update after the snapshot is then read below, not missed.
        if state["last"] == "$":
            newest = r.xrevrange(stream, count=1)
            state["last"] = newest[0][0] if newest else "0"
            shown = snapshot(r, a.prefix, a.symbol)
            if shown[0] is not None:
                print(render(a.symbol, *shown), flush=True)
                seen += 1
        backoff = 0.1
        while a.count is None or seen < a.count:
            try:
                # Blocking 1 s, well inside redis-py's socket timeout (5 s in recent versions).
                replies = r.xread({stream: state["last"]}, count=100, block=1000) or []
                entries = [e for _, es in replies for e in es]
                # A snapshot reads the current state, so when several updates arrived since the
                # last read (the strategy is behind), one snapshot serves them all.
                if entries:
                    state["last"] = entries[-1][0]
                    print(render(a.symbol, *snapshot(r, a.prefix, a.symbol)), flush=True)
                    seen += 1
                backoff = 0.1
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                # Redis restarting: try again, from the last entry read.
                print(f"strategy: redis: {e}; retrying in {backoff:.1f} s", file=sys.stderr)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        return 0
    finally:
        print(f"strategy: resume with --from {state['last']}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
