//! The Redis sink (CONTRACT section 4): every published mark applied in ONE atomic, idempotent
//! step.
//!
//! A Lua script receives the mark `T` and its changes. If the stored `{prefix}:frontier` is `>= T`
//! it changes nothing (replays and restarts never move results backwards; marks are compared as
//! decimal texts, exact at any `u64`, where Lua's numbers are doubles). Otherwise it writes the
//! book and ticker strings, replaces the candle member of each changed `open_time` in its sorted
//! set (and trims the set to `candle_retention`), removes candles dropped by retention (a score is
//! a double, which from 2^53 stands for several open times: there the member is found by its text),
//! sets the frontier and appends `{ts, keys}` to the `{prefix}:updates` stream (capped near
//! 10,000). Redis runs a script atomically, so a reader that reads the frontier and keys together
//! (MULTI/EXEC or a script) sees exactly the state at that frontier.
//!
//! Before writing, the script checks that every key it writes holds nothing or the type it writes
//! there, and tries a write on each key and every other command it uses in forms that change
//! nothing (so that a key or a command the Redis user may not write, by ACL, fails there, as does
//! a Redis out of memory), and refuses the whole step otherwise: Redis does not undo a script's
//! writes when a later command of it fails, so a step failing halfway would show readers keys
//! ahead of the frontier. (The script's own comments say which forms, and what can still tear a
//! step.) It also refuses a step when the stored frontier is below the last one this job found
//! or wrote: Redis lost results (restarted empty, from an older save, or keys evicted), and
//! writing on would publish a frontier whose state is incomplete. The job exits 1; started
//! again, it rebuilds them.
//!
//! **Catching up.** A job that finds a frontier `F` stored rebuilds its state by replaying its
//! input, and marks at or below `F` are not written. Their changes are kept (the last per key
//! and candle; a candle dropped by retention is forgotten, as the run that wrote `F` removed it)
//! and written with the first mark above `F`, in its one step: how the rebuilt state got to `F`
//! may differ from what Redis holds (an event late in the first run by wall-clock idleness lands
//! at its own timestamp in the replay; a later run may read events below `F` that the first never
//! saw), and the step brings every key the rebuilt state has to its value at that mark. Before
//! that step the writer reads what Redis holds of those keys and leaves out the changes it
//! holds already (usually nearly all), so the step stays the size of what differs. When no mark
//! above `F` comes before a `run --until-end` ends (after a live job stopped before it had read
//! every event up to the marks its stop closed, no later event), its step is written at `F`
//! itself as it ends: the one step that changes what Redis holds at its frontier, which stays
//! `F` (with a stream entry at `F`). Such a run ends only once it has read every partition to
//! its end as of its start: every event the run that wrote `F` read, and more. A live job
//! stopped, or a `replay` (a backtest into a live job's prefix), below `F` writes nothing: a
//! stop may come before the history is read (a rewrite there moved results hours back). The same
//! step removes, before its writes, what Redis holds under the prefix that the rebuilt state
//! lacks (a resolution or interval no longer configured, candles beyond a smaller retention,
//! symbols of another input), which would otherwise stay for good, looking current. A live job
//! removes only the first two: it may have passed the frontier with a partition idle or read in
//! part, whose results come later. That needs
//! the whole input from its first message ([`RedisOptions::whole_history`]); without it, the kept
//! changes are dropped instead and Redis keeps what it holds up to `F`: a rebuild without the
//! lost messages would bring correct results to partial ones.
//!
//! Writing happens on a thread of its own behind a bounded queue. When Redis is slow the thread
//! merges the queued consecutive marks into one step (only the last is the new frontier; a key
//! changed twice keeps its last value). When Redis is gone it retries with capped exponential
//! backoff and logs (an outage, a timeout, a server loading, out of memory or read-only: failures
//! that end); an error that retrying cannot mend (a key of another type, a refused command or
//! password, a script error) stops the writer, and the job exits 1 with it; so does, in a bounded
//! job, one mark's write failing for `--redis-patience-s`. When the queue is
//! full, the job's sources stop reading (backpressure) instead of buffering without bound, and
//! resume when Redis catches up: process 0's at once, every process's once its closed input in
//! flight reaches its bound (the results' frontier stays at the first mark waiting here; module
//! doc of `crate::job`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tampines_dataflows::results::{Change, Published};

use crate::metrics::metrics;

/// Marks queued for the writer before the sources are paused.
const QUEUE: usize = 64;
/// Stream entries kept (approximately).
const STREAM_CAP: usize = 10_000;
/// Keys read per pipeline when catching up.
const READ_BATCH: usize = 10_000;

const SCRIPT: &str = r#"
-- Marks are u64 decimal texts without leading zeros, compared exactly (Lua numbers are doubles).
local function below(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local frontier = redis.call('GET', KEYS[1])
local t = ARGV[1]
local n = tonumber(ARGV[3])
-- A step may rewrite the stored frontier's mark only where it says so: a restarted job's
-- catching-up step when no mark above the frontier came (the module doc).
local again = ARGV[7 + 4 * n] == '1' and frontier == t
if frontier and not below(frontier, t) and not again then return 0 end
local retention = tonumber(ARGV[2])
-- The last frontier this job found or wrote ('' if none): one stored below it was lost.
local last = ARGV[6 + 4 * n]
if last ~= '' and (not frontier or below(frontier, last)) then
  return redis.error_reply('TAMPINES Redis lost results: its frontier is ' .. (frontier or 'gone') ..
    ', where this job had ' .. last .. ' (restarted empty or from an older save, or its keys evicted?); start the job again to rebuild them')
end
-- Scores are doubles: from 2^53 one score stands for several open times, so the member of this
-- open time is found by its text (a candle record has `"open_time":T` followed by a comma).
local function remove_at(key, score)
  if not below(score, '9007199254740992') then
    local field = '"open_time":' .. score .. ','
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, score, score)) do
      if string.find(m, field, 1, true) then redis.call('ZREM', key, m) end
    end
  else
    redis.call('ZREMRANGEBYSCORE', key, score, score)
  end
end
-- Before its first write the step checks every key it writes and every command it writes with:
-- a script that fails halfway keeps its earlier writes, which readers would see ahead of the
-- frontier.
-- - Each key must hold what the step writes there, or nothing, and be one the Redis user may
--   write (ACL): tried where a write changes nothing (SET with NX on a key that exists and XX
--   on one that does not; ZADD XX INCR 0 of the member NUL, which adds nothing and moves no
--   score).
-- - Each command the step uses is tried once (ZREM of the member NUL, which no candle record
--   is; empty ranges; DEL on a key that does not exist, `{prefix}:frontier:probe`, where the
--   user may touch it).
-- - XADD has no such form (an XADD that fails counts in Redis's error statistics at every
--   step): the stream entry is written before the step's results, after the removals of a
--   catching-up step, whose first DEL is then its first write (where DEL could not be tried);
--   no reader sees it before the rest, the script being atomic.
-- What can still tear a step: ACL selectors that allow a command on some keys only (each command
-- is tried once), and XADD refused after a catching-up step's deletions (said so).
-- The frontier's SET is tried first: Redis refuses a script out of memory only at its first
-- write command and lets it write on after any (ZREM would be one), so an out-of-memory
-- refusal comes from that try, and ends the step.
local function tried(r, command, key, doing)
  if type(r) ~= 'table' or not r.err then return nil end
  local function says(text) return string.find(r.err, text, 1, true) end
  -- Redis 6 and 7.0 say "can't run this command" and "can't access", 7.2 "no permissions to
  -- run" and "to access".
  if says("can't run this command") or says('permissions to run') then
    return redis.error_reply('TAMPINES the Redis user may not run ' .. command ..
      ', which a step writes with (ACL); nothing of this step was written')
  end
  if key and (says("can't access") or says('permissions to access')) then
    return redis.error_reply('TAMPINES the Redis user may not ' .. (doing or 'write') .. ' ' ..
      key .. ' (ACL); nothing of this step was written')
  end
  -- Redis 6 puts the script's place before the code: returned from the code on.
  local oom = says('OOM command')
  if oom then return redis.error_reply(string.sub(r.err, oom)) end
  -- Anything else wrote nothing and tells nothing.
  return nil
end
local bad = tried(redis.pcall('SET', KEYS[1], t, frontier and 'NX' or 'XX'), 'SET', KEYS[1])
if bad then return bad end
local function misplaced(key, kind)
  local found = redis.pcall('TYPE', key)
  if found.err then return tried(found, 'TYPE', key, 'read') or found end
  found = found['ok']
  if found ~= 'none' and found ~= kind then
    return redis.error_reply('TAMPINES ' .. key .. ' holds a ' .. found .. ', not a ' .. kind), found
  end
  return nil, found
end
bad = misplaced(KEYS[2], 'stream')
if bad then return bad end
-- The commands the step uses beyond SET and ZADD, each tried once, on the first key that needs it.
local tries = {}
local function uses(command, key)
  if tries[command] then return nil end
  tries[command] = true
  local r
  if command == 'ZREM' then r = redis.pcall('ZREM', key, '\0')
  elseif command == 'ZREMRANGEBYRANK' then r = redis.pcall('ZREMRANGEBYRANK', key, 1, 0)
  elseif command == 'DEL' then
    -- On a key that does not exist (a refused key says nothing of the command: nothing to try).
    local probe = KEYS[1] .. ':probe'
    local found = redis.pcall('TYPE', probe)
    if found.err or found['ok'] ~= 'none' then return nil end
    r = redis.pcall('DEL', probe)
    key = nil
  else r = redis.pcall(command, key, '(0', '(0') end
  return tried(r, command, key)
end
-- The commands `remove_at` uses for a score.
local function removing(key, score)
  if not below(score, '9007199254740992') then
    return uses('ZRANGEBYSCORE', key) or uses('ZREM', key)
  end
  return uses('ZREMRANGEBYSCORE', key)
end
for c = 1, n do
  local kind, key, score = ARGV[4 * c], ARGV[4 * c + 1], ARGV[4 * c + 2]
  local found
  local string_kind = kind == 's' or kind == 'x'
  bad, found = misplaced(key, string_kind and 'string' or 'zset')
  if bad then return bad end
  if string_kind then
    bad = tried(redis.pcall('SET', key, '', found ~= 'none' and 'NX' or 'XX'), 'SET', key)
  else
    bad = tried(redis.pcall('ZADD', key, 'XX', 'INCR', 0, '\0'), 'ZADD', key)
  end
  if not bad then
    if kind == 'z' then
      bad = uses('ZREMRANGEBYRANK', key) or removing(key, score)
    elseif kind == 'r' then
      bad = removing(key, score)
    elseif kind == 'm' then
      bad = uses('ZREM', key)
    elseif kind == 'x' then
      bad = uses('DEL', key)
    elseif kind == 'y' then
      bad = uses('ZREMRANGEBYRANK', key)
    end
  end
  if bad then return bad end
end
-- The stream entry, before the first result (after the removals, which come first).
local announced = false
local function announce(removed)
  announced = true
  local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4 + 4 * n], '*', 'ts', ARGV[1],
    'keys', ARGV[5 + 4 * n])
  if type(added) ~= 'table' or not added.err then return nil end
  if removed > 0 then
    return redis.error_reply('TAMPINES XADD refused (' .. added.err .. ') after ' .. removed ..
      ' removals of results this run does not make; its results and frontier were not written')
  end
  return tried(added, 'XADD', KEYS[2]) or added
end
local i = 4
for c = 1, n do
  local kind, key, score, json = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if not announced and (kind == 's' or kind == 'z' or kind == 'r') then
    bad = announce(c - 1)
    if bad then return bad end
  end
  i = i + 4
  if kind == 's' then
    redis.call('SET', key, json)
  elseif kind == 'z' then
    remove_at(key, score)
    redis.call('ZADD', key, score, json)
    redis.call('ZREMRANGEBYRANK', key, 0, -(retention + 1))
  elseif kind == 'r' then
    remove_at(key, score)
  elseif kind == 'm' then
    redis.call('ZREM', key, json)
  elseif kind == 'y' then
    -- A whole set: emptied, which removes it (with a command tried above, unlike DEL).
    redis.call('ZREMRANGEBYRANK', key, 0, -1)
  else
    -- The first may be DEL's first try (where it could not be tried before): said as one.
    local r = redis.pcall('DEL', key)
    if type(r) == 'table' and r.err then return (c == 1 and tried(r, 'DEL', key)) or r end
  end
end
if not announced then
  bad = announce(n)
  if bad then return bad end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#;

/// State of the sink, shared with the job (backpressure) and metrics.
#[derive(Debug, Default)]
pub struct SinkState {
    /// The queue is full: sources should stop reading.
    pub backpressure: AtomicBool,
    /// The last mark Redis holds (written by us, or found there at start).
    pub durable: AtomicU64,
    /// Failed attempts so far.
    pub failures: AtomicU64,
    /// Atomic steps written.
    pub writes: AtomicU64,
}

/// Options of the sink.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL, user and password included.
    pub url: String,
    /// Key prefix.
    pub prefix: String,
    /// Candles kept per sorted set.
    pub retention: usize,
    /// How long a mark's write may go on failing before the writer stops (a bounded job's
    /// `--redis-patience-s`), or None: for ever (a live job waits for Redis to come back).
    pub patience: Option<Duration>,
    /// The job reads every input from its first message, so state rebuilt below a stored
    /// frontier is whole. When false (retention dropped the start of a partition, or reading
    /// starts later), the changes of the marks at or below it are not written: Redis's results
    /// there are the first run's, made from more input than this one has.
    pub whole_history: bool,
    /// The job is a `run --until-end`: it ends only once it has read every partition to its
    /// end as of its start, which holds every event the run that wrote the stored frontier read.
    /// When no mark above that frontier comes, its catching-up step is written at the frontier
    /// itself as it ends (module doc). Not for a live job, whose stop may come before it has read
    /// its history, nor a replay of files into a prefix whose frontier is above its data (a
    /// backtest into a live job's prefix): those write nothing.
    pub rewrite_at_stored: bool,
}

/// A change's place in a step: its key and score (the last change of each is written).
type Slot = (&'static str, Option<u64>);

/// Something Redis holds under the prefix that the rebuilt state lacks, removed by the
/// catching-up step (module doc): a result of another configuration or of input this run does
/// not have.
#[derive(Debug)]
struct Stale {
    /// `x`: a book or ticker string, `y`: a whole candle set, `m`: one candle of a set.
    kind: &'static str,
    /// The key, prefix included.
    key: String,
    /// The candle record, for `m`.
    member: String,
}

/// The handle the publishing worker holds.
pub struct RedisSink {
    queue: Option<SyncSender<Published>>,
    held: std::collections::VecDeque<Published>,
    /// The frontier found stored at start: marks up to it are not written by themselves.
    stored: Option<u64>,
    /// The changes of those marks, the last per slot, for the first mark above `stored`.
    catching_up: BTreeMap<Slot, Change>,
    /// Every mark so far was at or below `stored` (and there was one): nothing was written.
    catching_up_only: bool,
    /// [`RedisOptions::whole_history`]: false, the changes at or below `stored` are dropped.
    whole_history: bool,
    /// [`RedisOptions::rewrite_at_stored`].
    rewrite_at_stored: bool,
    thread: Option<JoinHandle<()>>,
    /// Shared state.
    pub state: Arc<SinkState>,
    error: Arc<Mutex<Option<String>>>,
}

impl RedisOptions {
    /// Checks the URL (bad usage, exit 2) without connecting: what the redis crate refuses,
    /// and what it would ignore without a word: a query other than `protocol` (`?db=5` wrote
    /// to database 0; a socket's URL reads `db`, `user` and `pass` too), and a fragment (one in
    /// a socket URL's password cut it short).
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| {
            let url = crate::cli::hide_url_password(&self.url);
            anyhow::anyhow!("bad --redis URL {url:?}: {why}")
        };
        redis::Client::open(self.url.as_str()).map_err(|e| bad(said(&e, None)))?;
        let Ok(url) = url::Url::parse(&self.url) else {
            return Ok(()); // a form the crate reads otherwise (a bare socket path)
        };
        let socket = url.scheme() == "unix" || url.scheme().ends_with("+unix");
        let read: &[&str] = if socket {
            &["db", "user", "pass", "protocol"]
        } else {
            &["protocol"]
        };
        if let Some((key, _)) = url.query_pairs().find(|(k, _)| !read.contains(&k.as_ref())) {
            let hint = if !socket && key == "db" {
                " (the database is the path: redis://HOST:PORT/DB)"
            } else {
                ""
            };
            return Err(bad(format!(
                "its query parameter {key:?} is not read{hint}"
            )));
        }
        match url.fragment() {
            None => {}
            // The crate's `rediss://...#insecure` needs a feature this build leaves out: it
            // failed at start, exit 1.
            Some("insecure") => {
                return Err(bad(
                    "#insecure is not supported: certificates are always verified (SSL_CERT_FILE names the authority's)".into(),
                ))
            }
            Some(_) => {
                return Err(bad(
                    "a Redis URL has no fragment (a '#' in a password is written %23)".into(),
                ))
            }
        }
        Ok(())
    }
}

impl RedisSink {
    /// Starts the writer thread, for a Redis that held the frontier `stored` at start.
    pub fn start(
        options: RedisOptions,
        state: Arc<SinkState>,
        stored: Option<u64>,
    ) -> Result<RedisSink> {
        let client = redis::Client::open(options.url.as_str()).context("--redis")?;
        let (tx, rx) = sync_channel(QUEUE);
        let error = Arc::new(Mutex::new(None));
        let whole_history = options.whole_history;
        let rewrite_at_stored = options.rewrite_at_stored;
        let writer = Writer {
            client,
            connection: None,
            options,
            state: state.clone(),
            script: redis::Script::new(SCRIPT),
            error: error.clone(),
            catching_up: stored.is_some(),
            stored,
            policy_checked: false,
        };
        let thread = std::thread::Builder::new()
            .name("redis-writer".into())
            .spawn(move || writer.run(rx))
            .context("starting the Redis writer")?;
        Ok(RedisSink {
            queue: Some(tx),
            held: Default::default(),
            stored,
            catching_up: BTreeMap::new(),
            catching_up_only: false,
            whole_history,
            rewrite_at_stored,
            thread: Some(thread),
            state,
            error,
        })
    }

    /// Hands a batch to the writer; never blocks. Batches wait here while the queue is full, and
    /// the sources are told to pause. A batch at or below the stored frontier is kept for the
    /// first one above it (catching up, in the module doc).
    pub fn push(&mut self, mut batch: Published) {
        if self.stored.is_some_and(|f| batch.time <= f) {
            self.catching_up_only = true;
            if !self.whole_history {
                return;
            }
            for mut c in batch.changes {
                if let Some(json) = c.json.take() {
                    // Kept for many marks, maybe: with a text of its own, not its mark's.
                    c.json = Some(json.detached());
                    self.catching_up.insert(slot(&c), c);
                } else {
                    // A candle dropped by retention: its removal was written by the run that
                    // wrote the frontier; kept, every candle ever dropped would be held here.
                    self.catching_up.remove(&slot(&c));
                }
            }
            return;
        }
        self.catching_up_only = false;
        if !self.catching_up.is_empty() {
            let mut merged = std::mem::take(&mut self.catching_up);
            for c in batch.changes {
                merged.insert(slot(&c), c);
            }
            batch.changes = merged.into_values().collect();
        }
        self.held.push_back(batch);
        self.drain();
    }

    /// At the end, every mark closed, each at or below the stored frontier: the changes kept
    /// for the first mark above it go to the writer at the stored frontier itself. The input
    /// ended there (a live job stopped before it had read every event up to the marks its stop
    /// closed, and no later event); a run to the same end wrote nothing, and Redis kept results
    /// lacking events at or below its frontier (a chaos audit, 2026-12-07). Only where
    /// [`RedisOptions::rewrite_at_stored`]; a mark above the frontier carries them, as before.
    fn write_at_stored(&mut self) {
        let Some(stored) = self.stored else {
            return;
        };
        // Nothing rebuilt (no change at any mark) is no state to write: the step's removals
        // would take every result Redis holds as one this run does not make.
        if !self.rewrite_at_stored
            || !self.whole_history
            || !self.catching_up_only
            || self.catching_up.is_empty()
        {
            return;
        }
        self.catching_up_only = false;
        let changes = std::mem::take(&mut self.catching_up)
            .into_values()
            .collect();
        self.held.push_back(Published {
            time: stored,
            changes,
        });
    }

    /// Moves held batches into the queue while it has room.
    pub fn drain(&mut self) {
        let Some(queue) = self.queue.as_ref() else {
            return;
        };
        while let Some(batch) = self.held.pop_front() {
            match queue.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(batch)) => {
                    self.held.push_front(batch);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.error
                        .lock()
                        .expect("lock")
                        .get_or_insert("the Redis writer stopped".into());
                    self.held.clear();
                    break;
                }
            }
        }
        let behind = !self.held.is_empty();
        self.state.backpressure.store(behind, Ordering::Relaxed);
        metrics().redis_backpressure.set(behind as i64);
    }

    /// The earliest mark waiting for room in the writer's queue, if any.
    pub fn oldest_held(&self) -> Option<u64> {
        self.held.front().map(|b| b.time)
    }

    /// Why the writer stopped, if it did: a write that retrying cannot mend. Nothing more can be
    /// written, and the job must end (exit 1).
    pub fn failed(&self) -> Option<String> {
        self.error.lock().expect("lock").clone()
    }

    /// Waits until everything is written (end of a bounded job).
    pub fn finish(&mut self) -> Result<()> {
        self.write_at_stored();
        if let (Some(frontier), true) = (self.stored, self.catching_up_only) {
            // A run below a later one's results (a backtest into the prefix a live job or the
            // demo used): it exited 0 having written nothing, without a word.
            tracing::warn!(
                frontier,
                "every mark of this run is at or below the frontier Redis holds: nothing was written (another --prefix, or deleting this prefix's keys, starts afresh)"
            );
        }
        if let Some(queue) = self.queue.take() {
            for batch in self.held.drain(..) {
                let _ = queue.send(batch);
            }
            drop(queue);
        }
        // A writer that panicked wrote nothing more: a failure, not a finished job.
        if self.thread.take().is_some_and(|t| t.join().is_err()) {
            return Err(anyhow::anyhow!("the Redis writer thread panicked"));
        }
        match self.error.lock().expect("lock").take() {
            Some(e) => Err(anyhow::anyhow!(e)),
            None => Ok(()),
        }
    }
}

/// Where `c` goes in a step.
fn slot(c: &Change) -> Slot {
    (c.key(), c.score)
}

struct Writer {
    client: redis::Client,
    connection: Option<redis::Connection>,
    options: RedisOptions,
    state: Arc<SinkState>,
    script: redis::Script,
    /// Set when a write fails for good; the writer then stops.
    error: Arc<Mutex<Option<String>>>,
    /// The next step is the first after finding a frontier: it catches up (module doc).
    catching_up: bool,
    /// The frontier found at start: a catching-up step at this mark rewrites it.
    stored: Option<u64>,
    /// Redis's eviction policy was looked at (once, after the first write).
    policy_checked: bool,
}

/// Whether retrying may mend `e`: an outage or a timeout, or a server that is loading, busy
/// with a script, out of memory, failing to save, read-only (a replica before a failover),
/// short of the replicas it must write to (`min-replicas-to-write`) or a cluster in flux. Anything else (a key of another type, a refused command or password, a
/// script error) would fail the same way again.
fn passing(e: &redis::RedisError) -> bool {
    use redis::ErrorKind::*;
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            IoError | BusyLoadingError | TryAgain | ClusterDown | MasterDown | ReadOnly
        )
        || matches!(e.code(), Some(code) if PASSING.contains(&code))
        // Redis 6 returns an error of a command inside a script after the script's place
        // (`@user_script:: 57: -OOM command not allowed ...`), under a code of its own.
        || PASSING.iter().any(|code| e.to_string().contains(&format!(": -{code} ")))
}

/// The codes of errors that may end, which a script's error may carry.
const PASSING: [&str; 8] = [
    "OOM",
    "BUSY",
    "MISCONF",
    "LOADING",
    "NOREPLICAS",
    "READONLY",
    "MASTERDOWN",
    "TRYAGAIN",
];

impl Writer {
    fn run(mut self, rx: Receiver<Published>) {
        while let Ok(first) = rx.recv() {
            // Merge whatever else is already queued: one atomic step for consecutive marks.
            let mut time = first.time;
            let mut merged: BTreeMap<Slot, Change> = BTreeMap::new();
            let mut absorb = |b: Published, merged: &mut BTreeMap<Slot, Change>| {
                time = time.max(b.time);
                for c in b.changes {
                    merged.insert(slot(&c), c);
                }
            };
            absorb(first, &mut merged);
            while let Ok(b) = rx.try_recv() {
                absorb(b, &mut merged);
            }
            let mut changes: Vec<Change> = merged.into_values().collect();
            let mut stale = Vec::new();
            // A catching-up step at the stored frontier itself (`RedisSink::write_at_stored`).
            let again = self.catching_up && self.stored == Some(time);
            if std::mem::take(&mut self.catching_up) {
                if self.options.whole_history {
                    stale = self.stale(&changes);
                }
                changes = self.not_held(changes);
            }
            if again && changes.is_empty() && stale.is_empty() {
                tracing::info!(
                    mark = time,
                    "catching up: Redis holds every result of this run at its frontier already"
                );
                continue;
            }
            if let Err(e) = self.write(time, &changes, &stale, again) {
                let said = said(&e, None);
                tracing::error!(mark = time, error = %said, "redis write failed for good");
                let mut message = format!("writing mark {time} to Redis: {said}");
                if e.kind() == redis::ErrorKind::CrossSlot {
                    message += " (a Redis Cluster: not supported, as one step writes keys of \
                                every slot in one script; use one primary, with replicas)";
                }
                if e.to_string().contains("unauthenticated") {
                    // Redis 7 says this, not NOAUTH, to a client that has not authenticated
                    // (say its password was set or changed while the job ran).
                    message += " (Redis asks for a password: check the --redis URL's)";
                }
                self.error.lock().expect("lock").get_or_insert(message);
                return;
            }
        }
    }

    /// The changes of a catching-up step that Redis does not hold already. Most of a rebuilt
    /// state equals what Redis holds, and a step with all of it would be as large as the
    /// results, blocking Redis's readers while it ran. Read in pipelines of [`READ_BATCH`]; a
    /// read that fails keeps the changes it concerned (writing them again changes nothing).
    fn not_held(&mut self, changes: Vec<Change>) -> Vec<Change> {
        let p = self.options.prefix.clone();
        let mut held = vec![false; changes.len()];
        for (batch, held) in changes.chunks(READ_BATCH).zip(held.chunks_mut(READ_BATCH)) {
            let (strings, sets): (Vec<usize>, Vec<usize>) =
                (0..batch.len()).partition(|&i| batch[i].score.is_none());
            let mut get = redis::pipe();
            for &i in &strings {
                get.get(format!("{p}:{}", batch[i].key()));
            }
            let mut range = redis::pipe();
            for &i in &sets {
                let score = batch[i].score.unwrap_or(0);
                range.zrangebyscore(format!("{p}:{}", batch[i].key()), score, score);
            }
            let read = connected(&self.client, &mut self.connection).and_then(|c| {
                let values: Vec<Option<String>> = get.query(c)?;
                let members: Vec<Vec<String>> = range.query(c)?;
                Ok((values, members))
            });
            let (values, members) = match read {
                Ok(read) => read,
                Err(e) => {
                    // The rest stays unfiltered: the step is larger, and written (with retries)
                    // as any other; one connection timeout per batch would stall it instead.
                    tracing::warn!(error = %said(&e, None), "catching up: cannot read what Redis holds; writing every change");
                    self.connection = None;
                    break;
                }
            };
            for (&i, value) in strings.iter().zip(values) {
                held[i] = batch[i].json.is_some() && value.as_deref() == batch[i].json.as_deref();
            }
            for (&i, members) in sets.iter().zip(members) {
                held[i] = match &batch[i].json {
                    Some(json) => members.len() == 1 && members[0] == json.as_str(),
                    None => members.is_empty(), // nothing to remove
                };
            }
        }
        let before = changes.len();
        let kept: Vec<Change> = (changes.into_iter().zip(held))
            .filter_map(|(c, held)| (!held).then_some(c))
            .collect();
        tracing::info!(
            kept = kept.len(),
            of = before,
            "catching up: changes Redis does not hold yet"
        );
        kept
    }

    /// What Redis holds under the prefix that the rebuilt state of a catching-up step lacks. The
    /// step's `changes`, before [`Self::not_held`], are that whole state: every key and retained
    /// candle changed at some mark up to the step's (the marks at or below the stored frontier
    /// kept theirs). Anything else of the prefix's result keys (a string shaped as a book or
    /// ticker key, a sorted set shaped as a candle key; other keys are not ours) is a result the
    /// input and options of this run do not make (a resolution or interval no longer
    /// configured, a smaller retention, symbols of another input) and would stay for good,
    /// looking current. A live job removes only books and candle sets of a resolution or
    /// interval the rebuilt state has none of (while it has others), and candles beyond
    /// retention: it may have passed the frontier with a partition idle or read in part (a
    /// stalled broker; books and trades are in two topics), whose results come later, as late
    /// data. A read that fails leaves everything (logged).
    fn stale(&mut self, changes: &[Change]) -> Vec<Stale> {
        let p = self.options.prefix.clone();
        let bounded = self.options.patience.is_some();
        let mut strings = HashSet::new();
        let mut sets: HashMap<String, HashSet<&str>> = HashMap::new();
        // The resolutions and intervals the rebuilt state has: every book event of a symbol
        // changes all its resolutions, every trade all its intervals, so these are the
        // configured ones (or none met yet).
        let mut levels: HashSet<(&str, &str)> = HashSet::new();
        for c in changes {
            let (kind, last) = (c.kind(), c.key().rsplit(':').next().unwrap_or(""));
            if kind != "ticker" {
                levels.insert((kind, last));
            }
            let key = format!("{p}:{}", c.key());
            match (c.score, &c.json) {
                (None, _) => {
                    strings.insert(key);
                }
                (Some(_), json) => {
                    let set = sets.entry(key).or_default();
                    set.extend(json.as_deref());
                }
            }
        }
        let met = |kind: &str| levels.iter().any(|&(k, _)| k == kind);
        let retention = self.options.retention;
        let pattern = format!("{}:*", glob_escaped(&p));
        let read = connected(&self.client, &mut self.connection).and_then(|c| {
            let mut stale = Vec::new();
            let mut read_sets = Vec::new();
            for (type_, found) in [
                ("string", scan(c, &pattern, "string")?),
                ("zset", scan(c, &pattern, "zset")?),
            ] {
                for key in found {
                    let Some(name) = key
                        .strip_prefix(p.as_str())
                        .and_then(|k| k.strip_prefix(':'))
                    else {
                        continue;
                    };
                    // book:E:S:r and candles:E:S:interval have 4 parts or more, ticker:E:S 3.
                    let kind = name.split(':').next().unwrap_or("");
                    let (shaped, parts) = match (type_, kind) {
                        ("string", "book") | ("zset", "candles") => (true, 4),
                        ("string", "ticker") => (true, 3),
                        _ => (false, 0),
                    };
                    if !shaped || name.split(':').count() < parts {
                        continue;
                    }
                    let rebuilt = match type_ {
                        "string" => strings.contains(&key),
                        _ => sets.contains_key(&key),
                    };
                    let last = name.rsplit(':').next().unwrap_or("");
                    // A live job removes only what no configuration of it makes: it may have
                    // passed the frontier with a partition idle or read in part (a stalled
                    // broker), whose symbols' results come later, as late data. A bounded one
                    // reads every input up to each mark.
                    let unmade = kind != "ticker" && met(kind) && !levels.contains(&(kind, last));
                    if !rebuilt && (bounded || unmade) {
                        let kind = if type_ == "string" { "x" } else { "y" };
                        stale.push(Stale {
                            kind,
                            key,
                            member: String::new(),
                        });
                    } else if type_ == "zset" {
                        read_sets.push((rebuilt, key));
                    }
                }
            }
            for batch in read_sets.chunks(READ_BATCH / 100) {
                let mut range = redis::pipe();
                for (rebuilt, key) in batch {
                    if bounded && *rebuilt {
                        range.zrange(key, 0, -1);
                    } else {
                        // Only what is beyond retention (a smaller --candle-retention).
                        range.zrange(key, 0, -(retention as isize) - 1);
                    }
                }
                let members: Vec<Vec<String>> = range.query(c)?;
                for ((rebuilt, key), members) in batch.iter().zip(members) {
                    let kept = sets.get(key).filter(|_| bounded && *rebuilt);
                    stale.extend(
                        (members.into_iter())
                            .filter(|m| kept.is_none_or(|kept| !kept.contains(m.as_str())))
                            .map(|member| Stale {
                                kind: "m",
                                key: key.clone(),
                                member,
                            }),
                    );
                }
            }
            Ok(stale)
        });
        match read {
            Ok(stale) => {
                // A candle of an open time the rebuilt set has is replaced by its new record (an
                // open candle that went on), not removed: said apart, as no loss.
                let times: HashMap<&str, HashSet<&str>> = (sets.iter())
                    .map(|(key, kept)| {
                        (
                            key.as_str(),
                            kept.iter().filter_map(|m| open_time(m)).collect(),
                        )
                    })
                    .collect();
                let replaced = (stale.iter())
                    .filter(|s| s.kind == "m")
                    .filter(|s| {
                        open_time(&s.member).is_some_and(|t| {
                            times.get(s.key.as_str()).is_some_and(|ts| ts.contains(t))
                        })
                    })
                    .count();
                let keys = stale.iter().filter(|s| s.kind != "m").count();
                let candles = stale.iter().filter(|s| s.kind == "m").count() - replaced;
                if keys + candles > 0 {
                    tracing::warn!(
                        keys,
                        candles,
                        "catching up: removing results Redis holds that this run does not make (other options or input than the run that wrote them)"
                    );
                }
                if replaced > 0 {
                    tracing::debug!(
                        replaced,
                        "catching up: candles Redis holds replaced by their rebuilt records"
                    );
                }
                stale
            }
            Err(e) => {
                tracing::warn!(error = %said(&e, None), "catching up: cannot list the keys Redis holds; any this run does not make stay");
                self.connection = None;
                Vec::new()
            }
        }
    }

    /// Warns when Redis may evict results (an `allkeys-` policy): a key would be gone while the
    /// frontier says it is there, with no error to anyone. (A `volatile-` policy evicts only
    /// keys with a time to live, which results do not have.) Said, not refused: a Redis shared
    /// with a cache may be set so on purpose, and only a full one evicts.
    fn warn_if_evicting(&mut self) {
        let Some(c) = self.connection.as_mut() else {
            return;
        };
        match redis::cmd("INFO").arg("memory").query::<String>(c) {
            Ok(info) => {
                // Without a memory limit (`maxmemory` 0) nothing is evicted.
                let limited = field(&info, "maxmemory").is_some_and(|m| m != "0");
                let policy = field(&info, "maxmemory_policy").filter(|p| p.starts_with("allkeys-"));
                if let (true, Some(policy)) = (limited, policy) {
                    tracing::warn!(
                        policy,
                        "Redis may evict results when full (maxmemory-policy {policy}): a reader would miss keys the frontier says are there; set it to noeviction"
                    );
                }
            }
            // INFO may be refused to the job's user (ACL): nothing to tell then.
            Err(e) => {
                tracing::debug!(error = %said(&e, None), "cannot read Redis's eviction policy")
            }
        }
    }

    /// Applies one step, retrying with capped backoff until it lands or fails for good.
    /// `again`: the step rewrites the stored frontier's mark (`RedisSink::write_at_stored`).
    fn write(
        &mut self,
        time: u64,
        changes: &[Change],
        stale: &[Stale],
        again: bool,
    ) -> redis::RedisResult<()> {
        let mut backoff = Duration::from_millis(50);
        let mut failing_since = None;
        loop {
            let started = Instant::now();
            match self.try_write(time, changes, stale, again) {
                Ok(applied) => {
                    let m = metrics();
                    m.redis_latency.observe(started.elapsed().as_secs_f64());
                    m.redis_frontier.set(time as i64);
                    self.state.writes.fetch_add(1, Ordering::Relaxed);
                    self.state.durable.fetch_max(time, Ordering::Relaxed);
                    if !std::mem::replace(&mut self.policy_checked, true) {
                        self.warn_if_evicting();
                    }
                    tracing::debug!(
                        mark = time,
                        keys = changes.len(),
                        applied,
                        ms = started.elapsed().as_millis() as u64,
                        "redis write"
                    );
                    return Ok(());
                }
                Err(e) if !passing(&e) => return Err(e),
                Err(e) => {
                    // From the start of the first failing attempt: a write that hangs fails
                    // only at the socket's timeout, which counts too (it counted from there).
                    let since = *failing_since.get_or_insert(started);
                    let e = said(&e, None);
                    if let Some(patience) = self.options.patience {
                        if since.elapsed() >= patience {
                            // An I/O error, which `said` says as its text alone.
                            return Err(std::io::Error::other(format!(
                                "Redis failing for longer than --redis-patience-s ({} s); \
                                 the last error: {e}",
                                patience.as_secs()
                            ))
                            .into());
                        }
                    }
                    self.connection = None;
                    self.state.failures.fetch_add(1, Ordering::Relaxed);
                    metrics().redis_failures.inc();
                    // Capped exponential backoff against an outage, and no further than the
                    // patience's end, where the last try is made (the job went on failing up
                    // to a whole backoff, 5 s, past it).
                    let left = (self.options.patience).map(|p| p.saturating_sub(since.elapsed()));
                    let pause = left.map_or(backoff, |left| backoff.min(left));
                    tracing::warn!(mark = time, error = %e, retry_in_ms = pause.as_millis() as u64, "redis write failed");
                    std::thread::sleep(pause);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn try_write(
        &mut self,
        time: u64,
        changes: &[Change],
        stale: &[Stale],
        again: bool,
    ) -> redis::RedisResult<bool> {
        let p = self.options.prefix.clone();
        let mut invocation = self.script.key(format!("{p}:frontier"));
        invocation
            .key(format!("{p}:updates"))
            .arg(time)
            .arg(self.options.retention)
            .arg(changes.len() + stale.len());
        // Stale results first: a candle set's trim to retention after a change counted its
        // stale members, and took a kept candle in their place.
        for s in stale {
            invocation.arg(s.kind).arg(&s.key).arg(0).arg(&s.member);
        }
        for c in changes {
            let kind = match (&c.json, c.score) {
                (Some(_), None) => "s",
                (Some(_), Some(_)) => "z",
                (None, _) => "r",
            };
            invocation
                .arg(kind)
                .arg(format!("{p}:{}", c.key()))
                .arg(c.score.unwrap_or(0))
                .arg(c.json.as_ref().map_or(&b""[..], |j| j.as_bytes()));
        }
        // The stream entry counts keys: a sorted set may get several changes in one step (the
        // changes come in key order, from `run`'s merge), and stale candles are removed from
        // sets that may have changes too.
        let mut keys = changes.chunk_by(|a, b| a.key() == b.key()).count();
        if !stale.is_empty() {
            let changed: HashSet<String> =
                changes.iter().map(|c| format!("{p}:{}", c.key())).collect();
            let removed: HashSet<&str> = stale.iter().map(|s| s.key.as_str()).collect();
            keys += removed.iter().filter(|k| !changed.contains(**k)).count();
        }
        invocation.arg(STREAM_CAP).arg(keys);
        // The last frontier found in Redis or written there (`durable`; marks are above 0): a
        // lower one stored means Redis lost results.
        let last = self.state.durable.load(Ordering::Relaxed);
        invocation.arg(if last > 0 {
            last.to_string()
        } else {
            String::new()
        });
        invocation.arg(if again { "1" } else { "0" });
        let applied: i64 = invocation.invoke(connected(&self.client, &mut self.connection)?)?;
        Ok(applied == 1)
    }
}

/// The open time of a candle record, as its text (`"open_time":T,`).
fn open_time(record: &str) -> Option<&str> {
    let (_, rest) = record.split_once("\"open_time\":")?;
    rest.split_once(',').map(|(time, _)| time)
}

/// The value of `name` in an `INFO` reply.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Every key matching `pattern` that holds a value of `kind` (SCAN's TYPE filter, Redis 6).
fn scan(c: &mut redis::Connection, pattern: &str, kind: &str) -> redis::RedisResult<Vec<String>> {
    let mut found = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg(kind)
            .query(c)?;
        found.extend(keys);
        if next == 0 {
            // SCAN may return a key twice.
            found.sort_unstable();
            found.dedup();
            return Ok(found);
        }
        cursor = next;
    }
}

/// `text` with Redis's glob characters escaped, to match itself in `SCAN MATCH`.
fn glob_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// How long a write may wait for Redis's reply (or to send its step) before it fails.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the writer waits to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `e` as our messages say it. The crate's own text names its kind of error
/// (`Password authentication failed- AuthenticationFailed`, `Redis server refused to switch
/// database - ResponseError: DB index is out of range`); here:
/// - a timeout is said as one (the socket's own text reads `Resource temporarily unavailable
///   (os error 11)`); `waited`: how long each wait was (to connect or for a reply), where one
///   bound holds for both;
/// - an error Redis replied is `CODE: detail`, as Redis names it (`NOPERM: this user has no
///   permissions ...`), its detail alone where the code says nothing (`ERR`) or is the
///   script's own (`TAMPINES`, whose text is ours);
/// - any other is the crate's description, then its detail, without the name of its kind.
fn said(e: &redis::RedisError, waited: Option<Duration>) -> String {
    let text = e.to_string();
    if e.is_timeout() {
        return match waited {
            Some(waited) => format!(
                "no answer from Redis within {} s ({text})",
                waited.as_secs()
            ),
            None => format!(
                "Redis timed out ({} s to connect, {} s to answer a step: {text})",
                CONNECT_TIMEOUT.as_secs(),
                SOCKET_TIMEOUT.as_secs()
            ),
        };
    }
    let kind = format!("{:?}", e.kind());
    // The crate's stand-in for an extension error's missing text.
    let detail = e
        .detail()
        .filter(|d| *d != "Unknown extension error encountered");
    let (description, detail) = match detail {
        Some(detail) => (
            text.strip_suffix(&format!(" - {kind}: {detail}")),
            Some(detail),
        ),
        None => (text.strip_suffix(&format!("- {kind}")), None),
    };
    let said = match (description, detail) {
        (Some(description), Some(detail)) if description != SIGNALLED => {
            format!("{description}: {detail}")
        }
        // Replied by the server (an extension's code too: the crate's text is already so).
        (_, Some(detail)) => match e.code() {
            Some("ERR" | "TAMPINES" | "") | None => detail.to_string(),
            Some(code) => format!("{code}: {detail}"),
        },
        // A reply of its code alone (`-READONLY`, `-NOPERM`), or of nothing (`-`).
        (description, None) => match (e.code(), description) {
            (Some(""), _) => "Redis replied an error without text".to_string(),
            (Some(code), Some(SIGNALLED) | None) => format!("Redis replied the error {code}"),
            (_, Some(description)) => description.to_string(),
            (None, None) => text,
        },
    };
    // One line: a parse error's detail spans several (`Parse error at 1` then `Unexpected
    // ...` lines), and the job's last line must say why it failed.
    let lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

/// The redis crate's description of an error that Redis replied.
const SIGNALLED: &str = "An error was signalled by the server";

/// `connection`, opened on `client` if there is none.
fn connected<'a>(
    client: &redis::Client,
    connection: &'a mut Option<redis::Connection>,
) -> redis::RedisResult<&'a mut redis::Connection> {
    if connection.is_none() {
        let c = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        c.set_read_timeout(Some(SOCKET_TIMEOUT))?;
        // A step larger than the socket's buffers, sent into a network partition, would
        // otherwise wait for the kernel's TCP timeout (about 15 minutes).
        c.set_write_timeout(Some(SOCKET_TIMEOUT))?;
        *connection = Some(c);
    }
    Ok(connection.as_mut().expect("connected"))
}

/// Reads the stored frontier (None if there is none), retrying for up to `patience` while the
/// failure may pass (`passing`: no connection yet, a server loading or paused); a wrong
/// password or a refused command fails at once, and so does a frontier that is not a mark as
/// the script writes it.
pub fn stored_frontier(options: &RedisOptions, patience: Duration) -> Result<Option<u64>> {
    let client = redis::Client::open(options.url.as_str()).context("--redis")?;
    let key = format!("{}:frontier", options.prefix);
    let deadline = Instant::now() + patience;
    let mut reported: Option<Instant> = None;
    loop {
        // Each try waits to connect, and for the reply, up to 5 s, or what is left of the
        // patience (at least 1 s): a paused Redis answered nothing, and the start waited for as
        // long as it stayed paused, without a word.
        let wait = (deadline.saturating_duration_since(Instant::now()))
            .clamp(Duration::from_secs(1), Duration::from_secs(5));
        let attempt = client.get_connection_with_timeout(wait).and_then(|mut c| {
            c.set_read_timeout(Some(wait))?;
            c.set_write_timeout(Some(wait))?;
            redis::cmd("GET").arg(&key).query::<Option<String>>(&mut c)
        });
        match attempt {
            Ok(None) => return Ok(None),
            Ok(Some(text)) => {
                // Only the text the script writes and compares, a mark written back as it was
                // read: `+17` or `017`, read as 17 here, compared as text there, made every
                // mark look below it, and nothing was written, without a word.
                return match text.parse::<u64>() {
                    Ok(f) if f.to_string() == text => Ok(Some(f)),
                    _ => anyhow::bail!(
                        "reading the stored frontier: {key} holds {text:?}, not a mark (a whole \
                         number of ms in decimal, without sign or leading zeros); delete it, \
                         or use another --prefix"
                    ),
                };
            }
            Err(e) if passing(&e) && Instant::now() < deadline => {
                // Counted as a failed write: while the start waits for Redis nothing else moves
                // (no frontier, no lag), and a job that a supervisor restarts every 30 s raised
                // no alert.
                metrics().redis_failures.inc();
                // Said at once, then every 5 s (it was every try, five a second).
                if reported.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                    tracing::warn!(error = %said(&e, Some(wait)), "reading the stored frontier");
                    reported = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(200)); // retry interval, bounded by the deadline
            }
            // The error's own text: its source repeats it (`Connection refused (os error 111)`
            // twice).
            Err(e) => anyhow::bail!("reading the stored frontier: {}", said(&e, Some(wait))),
        }
    }
}

/// For processes that do not write to Redis: keeps `state.durable` at the frontier Redis holds,
/// read every second by a thread that ends with the job (when `state` is dropped).
pub fn follow_frontier(options: RedisOptions, state: &Arc<SinkState>) {
    let state = Arc::downgrade(state);
    let spawned = std::thread::Builder::new()
        .name("redis-frontier".into())
        .spawn(move || {
            let mut failing = false;
            while let Some(state) = state.upgrade() {
                match stored_frontier(&options, Duration::ZERO) {
                    Ok(Some(f)) => {
                        state.durable.fetch_max(f, Ordering::Relaxed);
                        failing = false;
                    }
                    Ok(None) => {}
                    // Said once per outage: offsets wait (process 0's own failures are logged
                    // where it writes; another --redis here was silent, and never committed).
                    Err(e) if !failing => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot read the frontier Redis holds: this process's offsets are not committed meanwhile");
                        failing = true;
                    }
                    Err(_) => {}
                }
                drop(state);
                std::thread::sleep(Duration::from_secs(1)); // polling interval
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot follow the Redis frontier: offsets will not be committed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> RedisOptions {
        RedisOptions {
            url: url.to_string(),
            prefix: "t".into(),
            retention: 1,
            patience: None,
            whole_history: true,
            rewrite_at_stored: false,
        }
    }

    /// A URL is refused where the redis crate would ignore part of it, or fail only at start;
    /// what it reads is accepted, for every scheme it knows.
    #[test]
    fn urls_are_refused_where_a_part_would_be_ignored() {
        for url in [
            "redis://h:1/3?protocol=resp3",
            "rediss://u:p@h:1/0",
            "valkey://h:1/7",
            "redis+unix:///tmp/r.sock?db=3&pass=x",
            "valkey+unix:///tmp/r.sock?db=5&user=u",
            "unix:///tmp/r.sock?db=1",
        ] {
            assert!(options(url).validate().is_ok(), "{url}");
        }
        for (url, why) in [
            (
                "redis://h:1?db=5",
                "its query parameter \"db\" is not read (the database is the path",
            ),
            (
                "valkey://h:1/0?pass=x",
                "its query parameter \"pass\" is not read",
            ),
            (
                "redis+unix:///tmp/r.sock?password=x",
                "its query parameter \"password\" is not read",
            ),
            ("redis://h:1/0#x", "a Redis URL has no fragment"),
            (
                "unix:///tmp/r.sock?pass=se#k",
                "a Redis URL has no fragment",
            ),
            ("valkey://h:1/7#frag", "a Redis URL has no fragment"),
            ("rediss://h:1/0#insecure", "#insecure is not supported"),
        ] {
            let e = options(url).validate().expect_err(url).to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    /// Errors are said without the crate's names of their kinds: a reply as Redis names it,
    /// the script's own text alone, the crate's description with its detail.
    #[test]
    fn errors_are_said_as_redis_and_the_script_say_them() {
        let replied = |reply: &str| -> redis::RedisError {
            redis::parse_redis_value(reply.as_bytes())
                .and_then(|v| v.extract_error())
                .expect_err(reply)
        };
        for (e, shown) in [
            (
                replied("-NOPERM this user has no permissions to run the 'xadd' command\r\n"),
                "NOPERM: this user has no permissions to run the 'xadd' command",
            ),
            (
                replied("-WRONGTYPE Operation against a key\r\n"),
                "WRONGTYPE: Operation against a key",
            ),
            (
                replied("-TAMPINES t:updates holds a hash, not a stream\r\n"),
                "t:updates holds a hash, not a stream",
            ),
            (replied("-ERR unknown command\r\n"), "unknown command"),
            (replied("-READONLY\r\n"), "Redis replied the error READONLY"),
            (replied("-\r\n"), "Redis replied an error without text"),
            (replied("-NOPERM\r\n"), "Redis replied the error NOPERM"),
            (
                redis::parse_redis_value(b"HTTP/1.1 400 Bad Request\r\n").expect_err("not RESP"),
                "parse error: Parse error at 1; Unexpected `84`; Unexpected `72`",
            ),
            (
                replied("-READONLY You can't write\r\n"),
                "READONLY: You can't write",
            ),
            (
                (
                    redis::ErrorKind::ResponseError,
                    "Redis server refused to switch database",
                    "DB index is out of range".to_string(),
                )
                    .into(),
                "Redis server refused to switch database: DB index is out of range",
            ),
            (
                (
                    redis::ErrorKind::AuthenticationFailed,
                    "Password authentication failed",
                )
                    .into(),
                "Password authentication failed",
            ),
            (
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into(),
                "refused",
            ),
        ] {
            assert_eq!(said(&e, None), shown, "{e}");
        }
        let timeout: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::WouldBlock, "again").into();
        assert_eq!(
            said(&timeout, Some(Duration::from_secs(2))),
            "no answer from Redis within 2 s (again)"
        );
    }

    /// An error that may end is found under Redis 6's wrapping of a script's command error too.
    #[test]
    fn errors_that_may_end_are_found_inside_a_script_error() {
        let wrapped = |code: &str| -> redis::RedisError {
            let detail = format!(
                "Error running script (call to f_1): @user_script:126: @user_script: 126: -{code} it"
            );
            (
                redis::ErrorKind::ResponseError,
                "An error was signalled by the server",
                detail,
            )
                .into()
        };
        for code in PASSING {
            assert!(passing(&wrapped(code)), "{code}");
        }
        assert!(!passing(&wrapped("NOPERM")));
        assert!(!passing(&wrapped("WRONGTYPE")));
    }
}
