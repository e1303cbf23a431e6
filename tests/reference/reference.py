#!/usr/bin/env python3
"""An independent reference of CONTRACT sections 1-3, checked against a replay's NDJSON output.

    reference.py OUT.ndjson IN.ndjson... [the replay's options]

Written from the contract and the README's "Where the contract is silent" alone: it shares no
code with Tampines, not even its harness's model (which parses with the dataflow's parser and
renders with its record writer). Decimals are Python's `decimal`, at 200 digits; results are
compared as numbers, as the contract says.

It recomputes every state from scratch at every progress mark and checks:
- the latest record of every key (book per exchange, symbol and resolution; ticker per exchange
  and symbol; candle per exchange, symbol, interval and open time) published up to the mark
  equals the reference's state at the mark, and no key is missing or extra;
- a record is published only when its value changed, and a book's or ticker's `ts` is its mark;
- no candle is published outside the newest `--candle-retention` of its series;
- the marks are exactly the times at which some result changed, plus the last one,
  `ceil(max ts / g) * g`.

The inputs must be valid events (the check of dead letters is the harness's): any other line is
an error (exit 2). Prints one JSON line (what was compared, and the reference's counts), then the
problems; exits 1 if there are any.
"""
import argparse
import json
import re
import sys
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, getcontext

getcontext().prec = 200

UNITS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000}


def ceil_to(x, g):
    return -((-x) // g) * g


def interval_ms(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text)
    return int(m.group(1)) * UNITS[m.group(2)]


def places(text):
    """Fractional digits of a decimal string, trailing zeros not counted."""
    return len(text.split(".", 1)[1].rstrip("0")) if "." in text else 0


def id_order(i):
    """Ids ordered as integers when they are canonical ones, before every other id as text."""
    return (0, int(i), "") if re.fullmatch(r"0|[1-9][0-9]*", i) else (1, 0, i)


def num(x):
    """A decimal (or its text) for comparing as a number; None stays None."""
    if x is None:
        return None
    d = Decimal(x)
    return Decimal(0) if d == 0 else d.normalize()


class Options:
    def __init__(self, a):
        self.g = a.granularity_ms
        self.lateness = a.lateness_ms
        self.window = a.window_ms
        self.depth = a.depth
        self.resolutions = [int(r) for r in a.resolutions.split(",")]
        self.intervals = [(name, interval_ms(name)) for name in a.intervals.split(",")]
        self.retention = a.candle_retention
        self.ticks = {}
        for t in ",".join(a.tick_size or []).split(",") if a.tick_size else []:
            name, step = t.strip().rsplit("=", 1)
            self.ticks[tuple(name.split(":", 1))] = Decimal(step)


def read(files, o):
    """Events with the timestamp each applies at, and counts. A late event (its timestamp closed:
    below the input's highest ts less lateness) applies at the input's earliest open timestamp;
    a symbol's book events apply in the order its input gave them; a late trade older than the
    finest interval's retention span is `too_late`."""
    events, counts = [], dict(too_late=0, late=0)
    span = o.retention * min(ms for _, ms in o.intervals)
    last = None
    for i, path in enumerate(files):
        highest, book_time = None, {}
        for n, line in enumerate(open(path)):
            if not line.strip():
                continue
            e = json.loads(line)
            if e.get("type") not in ("snapshot", "book", "trade"):
                print("%s:%d: not a valid event: %s" % (path, n + 1, line), file=sys.stderr)
                sys.exit(2)
            ts, name = e["ts"], (e["exchange"], e["symbol"])
            time = ceil_to(ts, o.g)
            late = highest is not None and time < highest - o.lateness
            if e["type"] == "trade" and late and ts + span <= highest:
                counts["too_late"] += 1
                continue
            if late:
                time = ceil_to(highest - o.lateness, o.g)
                counts["late"] += 1
            if e["type"] != "trade":
                time = max(time, book_time.get(name, time))
                book_time[name] = time
            events.append(dict(e=e, ts=ts, time=time, at=(i, n), name=name))
            highest = ts if highest is None else max(highest, ts)
        if highest is not None:
            last = ceil_to(highest, o.g) if last is None else max(last, ceil_to(highest, o.g))
    events.sort(key=lambda x: (x["time"], x["at"]))
    return events, counts, last


class Book:
    def __init__(self):
        self.bids, self.asks = {}, {}
        self.seq, self.sequenced, self.stale, self.places = None, False, True, 0

    def levels(self, e):
        for side, book in (("bids", self.bids), ("asks", self.asks)):
            for p, q in e[side]:
                self.places = max(self.places, places(p))
                if Decimal(q) == 0:
                    book.pop(Decimal(p), None)
                else:
                    book[Decimal(p)] = Decimal(q)

    def apply(self, e):
        """False for a duplicate, dropped."""
        if e["type"] == "snapshot":
            self.bids, self.asks, self.stale = {}, {}, False
            self.levels(e)
            self.seq = e.get("seq")
            self.sequenced = self.seq is not None
            return True
        seq, prev = e.get("seq"), e.get("prev_seq")
        if self.sequenced:
            if seq is not None and seq <= self.seq:
                return False
            if prev is not None:
                in_sequence = prev <= self.seq
            else:
                in_sequence = seq is not None and seq == self.seq + 1
            self.stale = self.stale or not in_sequence
        if seq is not None:
            self.seq = seq
        self.levels(e)
        return True

    def status(self):
        if self.stale:
            return "stale"
        if self.bids and self.asks and max(self.bids) >= min(self.asks):
            return "crossed"
        return "ok"

    def grouped(self, size, depth):
        bids, asks = {}, {}
        for p, q in self.bids.items():
            k = (p / size).to_integral_value(rounding=ROUND_FLOOR) * size
            bids[k] = bids.get(k, 0) + q
        for p, q in self.asks.items():
            k = (p / size).to_integral_value(rounding=ROUND_CEILING) * size
            asks[k] = asks.get(k, 0) + q
        top = lambda levels: tuple((num(p), num(q)) for p, q in levels[:depth])
        return top(sorted(bids.items(), reverse=True)), top(sorted(asks.items()))


def within_a_decimal(d):
    """`d` if its digits fit the 96 bits of Tampines' decimals, else None: the README's known
    limitation for `change_pct` (whose `open` may be tiny)."""
    d = d.normalize()
    scale = max(0, -d.as_tuple().exponent)
    return d if abs(d).scaleb(scale) <= 2**96 - 1 else None


def trade_order(t):
    return (t["ts"], id_order(t["e"]["id"]), t["time"], t["at"])


def ticker(trades, time, o, book):
    inside = [t for t in trades if time - o.window < t["ts"] <= time]
    bid = num(max(book.bids)) if book and book.bids else None
    ask = num(min(book.asks)) if book and book.asks else None
    if not inside:
        fields = "open high low last volume quote_volume vwap change change_pct open_ts last_ts"
        empty = {f: None for f in (fields + " first_id last_id").split()}
        return dict(empty, count=0, bid=bid, ask=ask)
    ordered = sorted(inside, key=trade_order)
    first, last = ordered[0], ordered[-1]
    prices = [Decimal(t["e"]["price"]) for t in inside]
    volume = sum(Decimal(t["e"]["qty"]) for t in inside)
    quote = sum(Decimal(t["e"]["price"]) * Decimal(t["e"]["qty"]) for t in inside)
    open_, close = Decimal(first["e"]["price"]), Decimal(last["e"]["price"])
    return dict(
        open=num(open_), high=num(max(prices)), low=num(min(prices)), last=num(close),
        volume=num(volume), quote_volume=num(quote),
        vwap=num((quote / volume).quantize(Decimal("1e-8"), rounding=ROUND_HALF_UP)),
        count=len(inside), change=num(close - open_),
        change_pct=num(within_a_decimal(
            ((close - open_) / open_ * 100).quantize(Decimal("1e-4"), rounding=ROUND_HALF_UP))),
        open_ts=first["ts"], last_ts=last["ts"], first_id=first["e"]["id"], last_id=last["e"]["id"],
        bid=bid, ask=ask)


def candles(trades, time, o, name):
    out = {}
    for label, ms in o.intervals:
        series = {}
        for t in trades:
            series.setdefault(t["ts"] // ms * ms, []).append(t)
        for opens in sorted(series)[-o.retention:]:
            ts = series[opens]
            ordered = sorted(ts, key=trade_order)
            prices = [Decimal(t["e"]["price"]) for t in ts]
            qty = lambda t: Decimal(t["e"]["qty"])
            out[("candle",) + name + (label, opens)] = dict(
                open_time=opens, close_time=opens + ms - 1,
                open=num(Decimal(ordered[0]["e"]["price"])), high=num(max(prices)),
                low=num(min(prices)), close=num(Decimal(ordered[-1]["e"]["price"])),
                volume=num(sum(qty(t) for t in ts)),
                buy_volume=num(sum((qty(t) for t in ts if t["e"]["side"] == "buy"), Decimal(0))),
                quote_volume=num(sum(Decimal(t["e"]["price"]) * qty(t) for t in ts)),
                count=len(ts), closed=time >= opens + ms)
    return out


def states(files, o):
    """The reference's state at every time where something may change, and its counts."""
    events, counts, last = read(files, o)
    if last is None:
        return [], counts, None
    # Repeated trades: a copy is dropped while an earlier counted one is inside the window at
    # the copy's timestamp.
    counted, trades, counts["trade_duplicates"] = {}, [], 0
    for x in events:
        if x["e"]["type"] != "trade":
            continue
        earlier = counted.setdefault(x["name"] + (x["e"]["id"],), [])
        if any(c["ts"] > x["time"] - o.window for c in earlier):
            counts["trade_duplicates"] += 1
            continue
        earlier.append(x)
        trades.append(x)
    times = {x["time"] for x in events} | {last}
    for t in trades:
        times.add(ceil_to(t["ts"] + o.window, o.g))
        times |= {ceil_to(t["ts"] // ms * ms + ms, o.g) for _, ms in o.intervals}
    by_symbol = {}
    for t in trades:
        by_symbol.setdefault(t["name"], []).append(t)
    book_events = [x for x in events if x["e"]["type"] != "trade"]
    books, applied, out, counts["book_duplicates"] = {}, 0, [], 0
    for time in sorted(t for t in times if t <= last):
        while applied < len(book_events) and book_events[applied]["time"] <= time:
            x = book_events[applied]
            applied += 1
            if not books.setdefault(x["name"], Book()).apply(x["e"]):
                counts["book_duplicates"] += 1
        state = {}
        for name, b in books.items():
            tick = o.ticks.get(name, Decimal(1).scaleb(-b.places))
            for r in o.resolutions:
                bids, asks = b.grouped(tick * r, o.depth)
                state[("book",) + name + (r,)] = dict(seq=b.seq, status=b.status(), bids=bids, asks=asks)
        for name, ts in by_symbol.items():
            ts = [t for t in ts if t["time"] <= time]
            if ts:
                state[("ticker",) + name] = ticker(ts, time, o, books.get(name))
                state.update(candles(ts, time, o, name))
        out.append((time, state))
    return out, counts, last


DECIMALS = set("open high low last volume quote_volume vwap change change_pct bid ask close buy_volume".split())

FIELDS = {
    "book": "kind exchange symbol resolution ts seq status bids asks",
    "ticker": "kind exchange symbol ts open high low last volume quote_volume vwap count change "
              "change_pct open_ts last_ts first_id last_id bid ask",
    "candle": "kind exchange symbol interval open_time close_time open high low close volume "
              "buy_volume quote_volume count closed",
}


def text_num(x):
    """A decimal of the output: a string (CONTRACT 3) or null; anything else stays as it is,
    marked, and so differs from the reference."""
    return num(x) if x is None or isinstance(x, str) else ("not a string", x)


def key_and_value(r):
    kind = r["kind"]
    if sorted(r) != sorted(FIELDS[kind].split()):
        # Fields missing or extra: a value no reference state equals.
        return key_and_value(dict((f, r.get(f)) for f in FIELDS[kind].split()))[0], ("fields", sorted(r))
    if kind == "book":
        side = lambda levels: tuple((text_num(p), text_num(q)) for p, q in levels)
        return (("book", r["exchange"], r["symbol"], r["resolution"]),
                dict(seq=r["seq"], status=r["status"], bids=side(r["bids"]), asks=side(r["asks"])))
    skip = {"kind", "exchange", "symbol", "ts"} if kind == "ticker" else {"kind", "exchange", "symbol", "interval"}
    value = {f: text_num(v) if f in DECIMALS else v for f, v in r.items() if f not in skip}
    if kind == "ticker":
        return ("ticker", r["exchange"], r["symbol"]), value
    if kind == "candle":
        return ("candle", r["exchange"], r["symbol"], r["interval"], r["open_time"]), value
    raise ValueError("unknown kind %r" % kind)


def compare(path, reference, last):
    marks, batches, batch = [], [], []
    for line in open(path):
        r = json.loads(line)
        if r["kind"] == "progress":
            marks.append(r["ts"])
            batches.append(batch)
            batch = []
        else:
            batch.append(r)
    problems = []
    if batch:
        problems.append("%d records after the last progress mark" % len(batch))
    if marks != sorted(set(marks)):
        problems.append("the marks do not increase")
    if (marks[-1] if marks else None) != last:
        problems.append("the last mark is %s, not %s" % (marks[-1] if marks else None, last))
    changed, before = [], {}
    for time, state in reference:
        if state != before:
            changed.append(time)
        before = state
    want = set(changed) | ({last} if last is not None else set())
    if set(marks) != want:
        problems.append("marks missing %s, extra %s" % (sorted(want - set(marks))[:10], sorted(set(marks) - want)[:10]))
    latest, at, compared, records = {}, -1, 0, 0
    for mark, batch in zip(marks, batches):
        while at + 1 < len(reference) and reference[at + 1][0] <= mark:
            at += 1
        state = reference[at][1] if at >= 0 else {}
        for r in batch:
            records += 1
            key, value = key_and_value(r)
            if r["kind"] != "candle" and r["ts"] != mark:
                problems.append("mark %d: %s published with ts %s" % (mark, key, r["ts"]))
            if latest.get(key) == value:
                problems.append("mark %d: %s published unchanged" % (mark, key))
            if key[0] == "candle" and key not in state:
                problems.append("mark %d: %s published, but not among the candles kept" % (mark, key))
            latest[key] = value
        for key, value in state.items():
            compared += 1
            if key not in latest:
                problems.append("mark %d: %s missing; reference %s" % (mark, key, value))
            elif latest[key] != value:
                got = latest[key]
                if isinstance(got, dict):
                    diff = {f: (got.get(f), value.get(f)) for f in set(value) | set(got) if got.get(f) != value.get(f)}
                else:
                    diff = (got, value)
                problems.append("mark %d: %s differs (output, reference): %s" % (mark, key, diff))
        problems += ["mark %d: %s published, not in the reference" % (mark, k)
                     for k in latest if k[0] != "candle" and k not in state]
    return dict(marks=len(marks), records=records, compared=compared), problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--granularity-ms", type=int, default=100)
    ap.add_argument("--lateness-ms", type=int, default=1000)
    ap.add_argument("--window-ms", type=int, default=86400000)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--resolutions", default="1,5,10,100")
    ap.add_argument("--intervals", default="1m,5m,15m,30m,1h,4h,1d")
    ap.add_argument("--tick-size", action="append")
    ap.add_argument("--candle-retention", type=int, default=1000)
    a = ap.parse_args()
    reference, counts, last = states(a.inputs, Options(a))
    summary, problems = compare(a.out, reference, last)
    print(json.dumps(dict(summary, **counts)))
    for p in problems[:20]:
        print("  " + p)
    if problems:
        print("%d problems" % len(problems))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
