#!/usr/bin/env python3
"""A downstream strategy reading Tampines' results from Redis (the Python twin of strategy.rs).

It follows `{prefix}:updates` (one stream entry per write step of the job: a published progress
mark, or several merged) and, for each read that returns new entries, reads ONE consistent
snapshot: the frontier, the symbol's resolution-1 book, its ticker and its newest 1-minute candles
inside MULTI/EXEC. The job writes each mark atomically, so the four values always belong to the
same progress mark. It prints one line per snapshot that differs from the last one printed (a
snapshot is the current state, so one read may already show the marks the next read returns):

    frontier=T symbol=EX:SYM bid=.. ask=.. status=.. spread=.. change_24h=.. change_pct=.. last_closed_1m=OPEN_TIME:O/H/L/C/V

`status` is the book's: trade on `ok` only (`stale`: a sequence gap or no snapshot yet, until
the next snapshot; `crossed`: bid >= ask). At its start it shows the state as it is, if a job
has written one. It follows through Redis restarts and connections that stop answering (10 s
without a reply), reconnecting and reading again from the last entry whose snapshot it read (a
failure at its start is not retried), and on its end (`--count`, an error, Ctrl-C or SIGTERM)
says on stderr the stream id to resume after (`--from ID`).

Needs redis-py (Debian: apt-get install python3-redis; or pip install redis).

    python3 examples/strategy.py --redis redis://127.0.0.1:6379 --symbol demo:S000USDT
"""

import argparse
import json
import signal
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


# A reply later than this is a connection that stopped answering (a host gone, a NAT entry
# expired): without a bound, a read on it waited for ever (redis-py 4, which Debian packages, has
# none by default). Well above the 1 s that a read blocks for.
REPLY_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--prefix", default="tampines")
    ap.add_argument("--symbol", default="demo:S000USDT", help="EXCHANGE:SYMBOL")
    ap.add_argument("--from", dest="start", default="$",
                    help="stream id to start after: $ = new updates only, 0 = oldest kept")
    ap.add_argument("--count", type=int, default=None, help="stop after N lines printed")
    a = ap.parse_args()
    r = redis.Redis.from_url(a.redis, decode_responses=True, socket_timeout=REPLY_TIMEOUT_S,
                             socket_connect_timeout=CONNECT_TIMEOUT_S)
    stream, seen, shown = f"{a.prefix}:updates", 0, None
    state = {"last": a.start}

    def show(line):
        nonlocal seen, shown
        if line != shown:
            print(line, flush=True)
            seen, shown = seen + 1, line

    try:
        # The state as it is now, if a job has written one (a quiet or finished job shows it too).
        # The stream id first: an update after the snapshot is then read below, not missed.
        if state["last"] == "$":
            try:
                newest = r.xrevrange(stream, count=1)
                now = snapshot(r, a.prefix, a.symbol)
            except redis.exceptions.RedisError as e:
                print(f"strategy: redis: {e}", file=sys.stderr)
                return 1
            if now[0] is not None:
                show(render(a.symbol, *now))
            state["last"] = newest[0][0] if newest else "0"
        backoff = 0.1
        while a.count is None or seen < a.count:
            try:
                replies = r.xread({stream: state["last"]}, count=100, block=1000) or []
                entries = [e for _, es in replies for e in es]
                if entries:
                    show(render(a.symbol, *snapshot(r, a.prefix, a.symbol)))
                    # Only once its snapshot is read: a failure before goes on from the entry
                    # before, whose update would have been lost.
                    state["last"] = entries[-1][0]
                backoff = 0.1
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                # Redis restarting or not answering: try again, from the last entry read.
                print(f"strategy: redis: {e}; retrying in {backoff:.1f} s", file=sys.stderr)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        return 0
    finally:
        print(f"strategy: resume with --from {state['last']}", file=sys.stderr, flush=True)


def stop(_signal, _frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM (systemctl stop, docker stop) ends it as Ctrl-C does, saying where to resume.
    signal.signal(signal.SIGTERM, stop)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
