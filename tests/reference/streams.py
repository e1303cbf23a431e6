#!/usr/bin/env python3
"""Seeded event streams dense in the contract's corners, for the independent reference check
(`reference.py`, `tests/independent_reference.rs`). Written apart from the harness's generator
(`harness/src/generate.rs`), in another language, so that the two cannot share a blind spot.

    streams.py SEED EVENTS OUT.ndjson [OUT2.ndjson ...] [options]

Every line is a valid event (CONTRACT 1), written by `json.dumps` (`", "` and `": "`: not the
parser's usual path). The streams hold snapshots with and without `seq` (some with empty sides),
updates in sequence, duplicated, overlapping (`prev_seq` before the last `seq`), with gaps (by
`seq` and by `prev_seq`), with `prev_seq` only and with neither, before any snapshot; removals
(`"0"`, `"0.000"`); prices with trailing zeros and finer prices appearing (the inferred tick
changes, also inside removals); trade ids as integers, with leading zeros, as text, repeated;
events going back in time (within lateness, beyond it, and with `--long-ago`, beyond the candle
retention).

With several outputs, symbol S0 goes to the first, S1 to the second, and every other symbol's
book events to the first and its trades to any: a symbol's trades then come from inputs with
their own watermarks.
"""
import argparse
import json
import random
import sys

ap = argparse.ArgumentParser()
ap.add_argument("seed", type=int)
ap.add_argument("events", type=int)
ap.add_argument("outputs", nargs="+")
ap.add_argument("--symbols", type=int, default=2)
ap.add_argument("--span-ms", type=int, default=20000, help="market time the stream covers")
ap.add_argument("--back-ms", type=int, default=1500, help="how far an event may go back")
ap.add_argument("--p-back", type=float, default=0.1, help="how often an event goes back")
ap.add_argument("--long-ago-ms", type=int, default=0, help="now and then a trade this far back")
ap.add_argument("--max-places", type=int, default=3)
ap.add_argument("--no-seq", action="store_true", help="no seq or prev_seq; two exchanges")
a = ap.parse_args()

rng = random.Random(a.seed)
symbols = [("ex", "S%d" % i) for i in range(a.symbols)]
seq = {s: 100 for s in symbols}
mid = {s: 100 + 50 * i for i, s in enumerate(symbols)}
places = {s: rng.randint(0, max(0, a.max_places - 1)) for s in symbols}
next_id = {s: 0 for s in symbols}
ids = {s: [] for s in symbols}


def price(s, p=None):
    p = places[s] if p is None else p
    text = "%.*f" % (p, mid[s] + rng.randint(-20 * 10**p, 20 * 10**p) / 10**p)
    if rng.random() < 0.1:  # trailing zeros, which do not count for the tick
        text += "0" * rng.randint(1, 3) if "." in text else "." + "0" * rng.randint(1, 3)
    return text


def qty():
    return rng.choice(["1", "0.5", "2.25", "0.001", "3", "0.1", "0.3333", "10"])


def levels(s, n):
    out = []
    for _ in range(n):
        p = places[s] + 1 if rng.random() < 0.05 and places[s] < a.max_places else places[s]
        q = "0" if rng.random() < 0.2 else qty()
        if q == "0" and rng.random() < 0.3:
            q = "0.000"
        out.append([price(s, p), q])
    return out


def trade_id(s):
    next_id[s] += 1
    i, c = next_id[s], rng.random()
    text = str(i) if c < 0.6 else "0%d" % i if c < 0.75 else rng.choice("abcXYZ") + str(i) if c < 0.9 else "%dx" % i
    ids[s].append(text)
    return text


events = []
clock = 1_700_000_000_000
for _ in range(a.events):
    clock += rng.randint(0, max(1, 2 * a.span_ms // a.events))
    ts = clock
    if rng.random() < a.p_back:
        ts = max(1, clock - rng.randint(1, a.back_ms))
    s = rng.choice(symbols)
    exchange, symbol = s
    c = rng.random()
    if c < 0.04:
        e = dict(type="snapshot", exchange=exchange, symbol=symbol, ts=ts,
                 bids=[[price(s), qty()] for _ in range(rng.randint(0, 6))],
                 asks=[[price(s), qty()] for _ in range(rng.randint(0, 6))])
        if rng.random() < 0.8:
            seq[s] += rng.randint(1, 5)
            e["seq"] = seq[s]
    elif c < 0.45:
        e = dict(type="book", exchange=exchange, symbol=symbol, ts=ts,
                 bids=levels(s, rng.randint(0, 3)), asks=levels(s, rng.randint(0, 3)))
        m = rng.random()
        if m < 0.6:
            seq[s] += 1
            e["seq"] = seq[s]
        elif m < 0.7:
            e["seq"] = seq[s] - rng.randint(0, 2)  # a duplicate
        elif m < 0.8:  # overlapping what it follows: in sequence
            step = rng.randint(1, 5)
            e["seq"], e["prev_seq"] = seq[s] + step, seq[s] - rng.randint(0, 2)
            seq[s] += step
        elif m < 0.87:  # a gap by seq
            step = rng.randint(2, 5)
            e["seq"] = seq[s] + step
            seq[s] += step
        elif m < 0.92:  # a gap by prev_seq
            step = rng.randint(1, 5)
            e["seq"], e["prev_seq"] = seq[s] + step, seq[s] + 1
            seq[s] += step
        elif m < 0.96:
            e["prev_seq"] = seq[s]  # no seq, in sequence
        # else neither: a gap once in sequence
    else:
        i = rng.choice(ids[s]) if ids[s] and rng.random() < 0.1 else trade_id(s)
        if a.long_ago_ms and rng.random() < 0.03:
            ts = max(1, clock - rng.randint(a.long_ago_ms // 2, 2 * a.long_ago_ms))
        e = dict(type="trade", exchange=exchange, symbol=symbol, ts=ts, id=i, price=price(s),
                 qty=qty(), side=rng.choice(["buy", "sell"]))
    if a.no_seq:
        e.pop("seq", None)
        e.pop("prev_seq", None)
        if rng.random() < 0.5:
            e["exchange"] = "ey"
    events.append(e)

files = [open(path, "w") for path in a.outputs]
for e in events:
    k = len(files)
    if e["symbol"] == "S0" or k == 1:
        f = files[0]
    elif e["symbol"] == "S1":
        f = files[1]
    else:
        f = files[rng.randrange(k)] if e["type"] == "trade" else files[0]
    f.write(json.dumps(e) + "\n")
for f in files:
    f.close()
