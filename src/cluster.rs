//! Connections between the processes of a job (`-n`, `-p`, `-h`), then timely's own execution.
//!
//! Timely connects the processes of a cluster itself, but its listener polls for connections
//! once a second, so every job of several processes started a second late, and it reports the
//! wait on stdout, which carries the results with `--out -`. Here each process connects the same
//! way, only at once and quietly: process `p` listens on its address(es) of the hostfile and
//! accepts every later process as soon as it connects; it connects to every earlier one,
//! retrying every 10 ms until that one listens (processes start in any order, on any host, so
//! it retries for as long as it takes, and says so on the log every 5 s; a connect that reached
//! the socket itself counts as not listening yet, see `dial_with`). The handshake is
//! timely's own (the connecting process's index, a big-endian `u64`) followed by a fingerprint
//! of the options every process must share, the process count and the index of the process
//! dialled (a `u64`: a process started with other ones, another `-n` or a hostfile in another
//! order is refused, where it made the job's output silently wrong, waited for ever or made
//! timely panic), answered with the accepting process's fingerprint, so that both sides of a
//! mismatch say so; an accepted connection
//! that closes or does not send it within 10 s (a TCP-only probe, such as a TCP health check)
//! is logged and dropped, see `place`. Once the job has formed, a process keeps listening and
//! turns away whoever connects (a second copy of a later process), which then exits 1 at once
//! (`turn_away`). The sockets go to timely's
//! `initialize_networking_from_sockets`, which does everything else as `execute` would. Before
//! that, each socket is set to give up on a peer that answers nothing for `SILENCE`
//! (`give_up_on_silence`): a process whose host vanished ends the job as one that stops does,
//! where timely would wait for it for ever.
//!
//! A job of one process is handed to `timely::execute` unchanged.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::initialize::Hooks;
use timely::communication::WorkerGuards;
use timely::execute::execute_from;
use timely::worker::Worker;
use timely::CommunicationConfig;

/// How often a process tries again to reach one that is not listening yet.
const RETRY: Duration = Duration::from_millis(10);

/// How often a wait for another process is logged.
const REPORT: Duration = Duration::from_secs(5);

/// How long an accepted connection may take to introduce itself (a process does at once).
const HANDSHAKE: Duration = Duration::from_secs(10);

/// How long a process's connection to another may stay without an answer before the job
/// gives up on that process (see [`give_up_on_silence`]).
const SILENCE: Duration = Duration::from_secs(30);

/// How long a connection may be idle before TCP asks the other side whether it is still there,
/// and how often it asks again.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);

/// The fingerprint process `index` of the job introduces itself and replies with: the
/// options' (`execute`), and the index. A process connecting to the one its hostfile places at
/// `index` sends the fingerprint of `index`, so that a hostfile listing the processes in
/// another order is a mismatch: both processes passed the handshake, then timely panicked.
fn of_process(fingerprint: u64, index: usize) -> u64 {
    digest(&(fingerprint, index))
}

/// A digest of options for the handshake (see [`execute`]).
pub fn digest(value: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// `timely::execute`, with the processes of a cluster connected as the module doc says.
/// `fingerprint` sums up the options every process must share (`job::run` says which): a process
/// that connects with another one is refused. It is a `DefaultHasher`'s, whose algorithm may
/// change between Rust releases, so builds of two toolchains may refuse each other.
pub fn execute<T, F>(
    config: timely::Config,
    fingerprint: u64,
    func: F,
) -> Result<WorkerGuards<T>, String>
where
    T: Send + 'static,
    F: Fn(&mut Worker) -> T + Send + Sync + 'static,
{
    let CommunicationConfig::Cluster {
        threads,
        process,
        addresses,
        zerocopy,
        ..
    } = &config.communication
    else {
        return timely::execute(config, func);
    };
    let (threads, process, zerocopy) = (*threads, *process, *zerocopy);
    // Every process runs as many workers (timely panicked on a mismatch) and counts as many
    // processes (one that counted more waited for ever, silently, for one that never came).
    let fingerprint = digest(&(fingerprint, threads, addresses.len()));
    let sockets = connect(addresses, process, fingerprint)
        .map_err(|e| format!("failed to connect the processes: {e}"))?;
    for socket in sockets.iter().flatten() {
        if let Err(error) = give_up_on_silence(socket, SILENCE) {
            tracing::warn!(%error, "a process that vanishes (its host gone, the network cut) may leave this one waiting for ever: cannot set TCP keepalive and TCP_USER_TIMEOUT");
        }
    }
    tracing::info!(
        process,
        processes = addresses.len(),
        "connected to the job's processes"
    );
    let hooks = Hooks::default();
    let locals = if zerocopy {
        ProcessBuilder::new_bytes_vector(threads, hooks.refill.clone(), hooks.spill.clone())
    } else {
        ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone())
    };
    let (builders, guard) =
        initialize_networking_from_sockets(locals, sockets, process, threads, hooks)
            .map_err(|e| format!("failed to initialize networking: {e}"))?;
    let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
    execute_from(builders, Box::new(guard), config.worker, func)
}

/// Makes TCP end `stream` (with `ETIMEDOUT`, which fails timely's send or receive thread, and so
/// the job, as a process that stops does) once the other side has answered nothing for about
/// `silence`: data sent and not acknowledged for that long (`TCP_USER_TIMEOUT`), or, on an idle
/// connection, keepalive probes unanswered for that long. A process whose host vanishes (power
/// lost, the network cut, the VM gone) sends no reset: timely would wait for it for ever, and
/// retransmitting unacknowledged data fails only after some 15 minutes. A process that is
/// alive answers both from its kernel, however busy it is, and so does one stopped (SIGSTOP, a
/// debugger): it is waited for, until more is queued for it than its receive buffer holds
/// (Linux 5.11 and later then end the connection after `silence` of a zero window).
fn give_up_on_silence(stream: &TcpStream, silence: Duration) -> io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE.min(silence))
        .with_interval(KEEPALIVE_EVERY.min(silence));
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(silence))?;
    Ok(())
}

/// One socket per process, in process order, `None` at `me`: connected to the earlier processes,
/// accepted from the later ones.
fn connect(
    addresses: &[String],
    me: usize,
    fingerprint: u64,
) -> io::Result<Vec<Option<TcpStream>>> {
    // Listening first: later processes may already be trying.
    let listeners = addresses[me]
        .split_whitespace()
        .map(|address| {
            TcpListener::bind(address).map_err(|e| {
                let line = me + 1;
                io::Error::new(
                    e.kind(),
                    format!(
                        "listening on {address} (line {line} of the hostfile, this process's): {e}"
                    ),
                )
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    let later = addresses.len() - me - 1;
    // What later processes introduce themselves with, and are answered with.
    let mine = of_process(fingerprint, me);
    let accepting = std::thread::spawn(move || {
        let accepted = accept(&listeners, me, later, HANDSHAKE, mine)?;
        if later > 0 {
            turn_away(listeners, mine);
        }
        Ok::<_, io::Error>(accepted)
    });
    let mut sockets: Vec<Option<TcpStream>> = Vec::with_capacity(addresses.len());
    for (index, address) in addresses.iter().enumerate().take(me) {
        sockets.push(Some(dial(address, index, me, fingerprint)?));
    }
    sockets.push(None);
    let accepted = accepting
        .join()
        .map_err(|_| io::Error::other("the accepting thread panicked"))??;
    sockets.extend(accepted.into_iter().map(Some));
    Ok(sockets)
}

/// Connects to process `index` at `line`, retrying until it listens, introduces `me`, and
/// waits up to [`REPLY`] for its fingerprint in reply: a mismatch or no reply is an error.
/// A hostfile line may hold several addresses, which that process listens on (as timely's); the
/// others dial the first. An address that cannot be one (no port, a bad port) is an error at
/// once; a name that does not resolve yet is retried (a cluster's names may appear after its
/// processes start).
fn dial(line: &str, index: usize, me: usize, fingerprint: u64) -> io::Result<TcpStream> {
    let address = line.split_whitespace().next().unwrap_or(line);
    dial_with(
        || connect_within(address, CONNECT),
        address,
        index,
        me,
        fingerprint,
    )
}

/// How long one try to connect to another process may take. A host that drops packets
/// silently (not up yet, or cut off) answers nothing: `TcpStream::connect` waited through the
/// kernel's retries of its first packet, about 130 s, saying nothing meanwhile, and once the
/// network was back it connected only at the next retry, up to 64 s later (an audit's, in
/// network namespaces). Within 3 s a reachable process answers, however far.
const CONNECT: Duration = Duration::from_secs(3);

/// `TcpStream::connect`, each address `address` resolves to tried for at most `within`. It fails
/// as `connect` does where the address is bad or resolves to none.
fn connect_within(address: &str, within: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for each in std::net::ToSocketAddrs::to_socket_addrs(address)? {
        match TcpStream::connect_timeout(&each, within) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

/// What a connecting process introduces itself with: its index, then the fingerprint of its
/// options, big-endian.
fn hello(me: usize, fingerprint: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(me as u64).to_be_bytes());
    bytes[8..].copy_from_slice(&fingerprint.to_be_bytes());
    bytes
}

/// A [`hello`] read back: the connecting process's index and its options' fingerprint.
fn read_hello(bytes: &[u8; 16]) -> (u64, u64) {
    let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    (word(0), word(8))
}

/// [`dial`], with `connect` making each attempt.
///
/// An attempt that connects the socket to itself is dropped and retried. While nobody listens
/// on a port of the local range of ephemeral ports (`net.ipv4.ip_local_port_range`), a connect
/// to it from the same host can be given that very port as its own, and TCP's simultaneous
/// open then connects the socket to itself: on Linux within some thousands of attempts to an
/// even port (measured: 5,484 on 127.0.0.1:47312). Taken for the earlier process, it would
/// leave that process waiting for us for ever while we talk to ourselves.
fn dial_with(
    mut connect: impl FnMut() -> io::Result<TcpStream>,
    address: &str,
    index: usize,
    me: usize,
    fingerprint: u64,
) -> io::Result<TcpStream> {
    let mut reported = Instant::now();
    loop {
        let attempt = connect().and_then(|stream| {
            if stream.local_addr()? == stream.peer_addr()? {
                // Closed with a reset, not into TIME_WAIT: a socket of ours in TIME_WAIT on
                // the port would stop the earlier process from listening there for a minute.
                // Should the option fail, the socket closes as usual and the dial goes on (its
                // error, `InvalidInput` on some systems, would otherwise end the dial below).
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "connected to itself: nobody listens yet",
                ));
            }
            Ok(stream)
        });
        match attempt {
            Ok(mut stream) => {
                stream.set_nodelay(true)?;
                let theirs = of_process(fingerprint, index);
                stream.write_all(&hello(me, theirs))?;
                check_reply(&mut stream, index, me, theirs)?;
                return Ok(stream);
            }
            Err(error) if error.kind() == io::ErrorKind::InvalidInput => {
                return Err(io::Error::new(
                    error.kind(),
                    format!("process {index}'s address {address:?}: {error}"),
                ));
            }
            Err(error) => {
                if reported.elapsed() >= REPORT {
                    tracing::warn!(process = index, address, %error, "waiting for a process to listen");
                    reported = Instant::now();
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// How long a process waits for the reply of one it connected to: longer than [`HANDSHAKE`],
/// since that one places the connections it accepts one at a time.
const REPLY: Duration = Duration::from_secs(60);

/// Reads the fingerprint process `index` replies with (once it has placed the connection) and
/// compares it with ours: both processes of a mismatch say so, where the connecting one used
/// to go on into timely and panic on the closed socket.
fn check_reply(
    stream: &mut TcpStream,
    index: usize,
    me: usize,
    fingerprint: u64,
) -> io::Result<()> {
    let mut reply = [0u8; 8];
    stream.set_read_timeout(Some(REPLY))?;
    stream.read_exact(&mut reply).map_err(|e| {
        let why = if e.kind() == io::ErrorKind::UnexpectedEof {
            "it closed the connection: its job has formed without this process (a second copy of \
             it?), or the hostfiles differ"
                .to_string()
        } else {
            format!("{e} (another job's, or another hostfile?)")
        };
        io::Error::new(
            e.kind(),
            format!("process {index} did not take this process ({me}) in: {why}"),
        )
    })?;
    stream.set_read_timeout(None)?;
    if u64::from_be_bytes(reply) != fingerprint {
        return Err(mismatch(me, index));
    }
    Ok(())
}

/// Process `later` and process `earlier` were given other options (or builds, process counts,
/// or hostfiles that list the processes in another order).
fn mismatch(later: usize, earlier: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("process {later} was started with other options than process {earlier} (or another build, another -n, or a hostfile listing the processes in another order): every process of a job needs the same ones"),
    )
}

/// Accepts the `later` processes after `me`, on any of the listeners, in process order; each
/// connection has `handshake` to introduce itself ([`place`]).
fn accept(
    listeners: &[TcpListener],
    me: usize,
    later: usize,
    handshake: Duration,
    fingerprint: u64,
) -> io::Result<Vec<TcpStream>> {
    let mut accepted: Vec<Option<TcpStream>> = (0..later).map(|_| None).collect();
    // Polled, not blocked on (even one address), so that the wait is logged: process 0 waited
    // for the others in silence.
    for listener in listeners {
        listener.set_nonblocking(true)?;
    }
    let mut reported = Instant::now();
    while accepted.iter().any(Option::is_none) {
        let mut any = false;
        for listener in listeners {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    place(stream, me, &mut accepted, handshake, fingerprint)?;
                    any = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if passing(&e) => tracing::warn!(%e, "a connection failed as it came"),
                Err(e) => return Err(e),
            }
        }
        if !any {
            if reported.elapsed() >= REPORT {
                let waiting = accepted.iter().filter(|s| s.is_none()).count();
                tracing::warn!(waiting, "waiting for processes to connect");
                reported = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(accepted.into_iter().flatten().collect())
}

/// Keeps listening once the job has formed, for a process that connects now (a second copy of
/// a later process, started after the job formed): its introduction is read, logged and the
/// connection closed, so that it ends at once with an error ([`check_reply`] reads the close).
/// With the listeners closed instead, it found nobody listening and retried for ever. One
/// connection at a time, each given [`HANDSHAKE`] to introduce itself; the threads end with the
/// process.
fn turn_away(listeners: Vec<TcpListener>, fingerprint: u64) {
    for listener in listeners {
        let spawned = std::thread::Builder::new()
            .name("turn-away".into())
            .spawn(move || {
                // The listeners of several addresses were polled without blocking.
                if listener.set_nonblocking(false).is_err() {
                    return;
                }
                loop {
                    let mut stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(e) if passing(&e) => continue,
                        Err(e) => {
                            tracing::warn!(%e, "no longer turning away late processes");
                            return;
                        }
                    };
                    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    match introduction(&mut stream, HANDSHAKE).map(|h| read_hello(&h)) {
                        Ok((index, theirs)) if theirs == fingerprint => {
                            tracing::warn!(
                                peer,
                                process = index,
                                "a process connected after the job formed (a second copy?): turned away"
                            );
                        }
                        // A health check or a scan, every few seconds for the job's life: not
                        // worth a warning each time.
                        Ok(_) => {
                            tracing::debug!(peer, "a connection that is no process of this job; dropped");
                        }
                        Err(error) => {
                            tracing::debug!(peer, %error, "a connection did not introduce itself as a process; dropped");
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(%e, "late processes will not be turned away");
        }
    }
}

/// Reads the index a connecting process introduces itself with and files its socket under it.
///
/// A connection that closes, fails or does not send its 16 bytes within `handshake` is no
/// process of the job (a TCP-only probe, such as a TCP health check): it is logged and dropped,
/// and accepting goes on. Other bytes are read as an index: one that is no later process's, or
/// one that came already, is an error (another job's process, processes given different
/// hostfiles, or a probe that sends data); so is a process whose options' fingerprint is not
/// ours (it computed other results: silently wrong output before).
fn place(
    mut stream: TcpStream,
    me: usize,
    accepted: &mut [Option<TcpStream>],
    handshake: Duration,
    fingerprint: u64,
) -> io::Result<()> {
    let (index, theirs) = match introduction(&mut stream, handshake) {
        Ok(hello) => {
            let (index, theirs) = read_hello(&hello);
            (index as usize, theirs)
        }
        Err(error) => {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::warn!(peer, %error, "a connection did not introduce itself as a process; dropped");
            return Ok(());
        }
    };
    let slot = index
        .checked_sub(me + 1)
        .and_then(|i| accepted.get_mut(i))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a connection introduced itself as process {index}, not one after {me}"),
            )
        })?;
    if slot.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("process {index} connected twice"),
        ));
    }
    // Our fingerprint, for the connecting process to compare (it says so too on a mismatch).
    stream.write_all(&fingerprint.to_be_bytes())?;
    if theirs != fingerprint {
        return Err(mismatch(index, me));
    }
    // A process's socket: timely reads it blocking, and fails the job on a read error.
    stream.set_read_timeout(None)?;
    stream.set_nodelay(true)?;
    *slot = Some(stream);
    Ok(())
}

/// The 16 bytes a connecting process introduces itself with ([`hello`]), all read within `within`
/// (a peer that sends them a byte at a time cannot hold accepting for longer). The stream is left
/// with a read timeout.
fn introduction(stream: &mut TcpStream, within: Duration) -> io::Result<[u8; 16]> {
    let deadline = Instant::now() + within;
    let silent = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no handshake within {within:?}"),
        )
    };
    let mut index = [0u8; 16];
    let mut got = 0;
    while got < index.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(silent());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut index[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before its handshake",
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(silent())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(index)
}

/// An error of `accept` that concerns one connection (reset or aborted before it was accepted,
/// or a signal), not the listener: accepting goes on.
fn passing(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `work`'s result, run on a thread; the test fails if it takes over 30 s (a dial that
    /// retries for ever, an accept that waits for ever).
    fn within_30s<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(work()));
        result
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{what} still waits after 30 s"))
    }

    /// The index and fingerprint the next connection to `listener` introduces itself with,
    /// answered with the fingerprint `reply`, as an earlier process answers.
    fn introduced(listener: &TcpListener, reply: u64) -> (u64, u64) {
        let (mut accepted, _) = listener.accept().unwrap();
        let mut hello = [0u8; 16];
        accepted.read_exact(&mut hello).unwrap();
        accepted.write_all(&reply.to_be_bytes()).unwrap();
        read_hello(&hello)
    }

    /// A socket connected to itself, the way a process dialling an earlier one that does not
    /// listen yet can get one: attempts to a free port of the ephemeral range until one is given
    /// that port as its own. Linux gives connects the ports of the range's first port's parity
    /// first, and binds to port 0 the others, so the neighbour (`^ 1`) of a port bound that way
    /// has the connects' parity; it is taken if it is free.
    #[cfg(target_os = "linux")]
    fn connected_to_itself() -> TcpStream {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let port = loop {
                assert!(
                    Instant::now() < deadline,
                    "no free port of the connects' parity"
                );
                let bound = TcpListener::bind("127.0.0.1:0").unwrap();
                let port = bound.local_addr().unwrap().port() ^ 1;
                if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    break port;
                }
            };
            for _ in 0..200_000 {
                assert!(
                    Instant::now() < deadline,
                    "no connect reached itself on {port}"
                );
                match TcpStream::connect(("127.0.0.1", port)) {
                    Ok(stream) if stream.local_addr().unwrap() == stream.peer_addr().unwrap() => {
                        return stream;
                    }
                    // Something else took the port meanwhile: another one.
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_connection_to_itself_is_not_the_process_dialled() {
        let looped = connected_to_itself();
        let port = looped.local_addr().unwrap().port();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let listening = listener.local_addr().unwrap();
        let mut first = Some(looped);
        let dialled = std::thread::spawn(move || {
            dial_with(
                || match first.take() {
                    Some(looped) => Ok(looped),
                    None => TcpStream::connect(listening),
                },
                "the test's listener",
                0,
                3,
                7,
            )
        });
        let process_0 = of_process(7, 0);
        assert_eq!(
            introduced(&listener, process_0),
            (3, process_0),
            "the handshake names the dialling process and its options"
        );
        let stream = dialled.join().unwrap().unwrap();
        assert_eq!(stream.peer_addr().unwrap(), listening);
        // The dropped socket left nothing in TIME_WAIT on the port: the process that was not
        // listening yet still can.
        TcpListener::bind(("127.0.0.1", port)).expect("the looped port is free again");
    }

    #[test]
    fn connections_that_do_not_introduce_themselves_are_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let accepting = std::thread::spawn(move || {
            within_30s("accepting after a silent connection", move || {
                accept(&[listener], 0, 1, Duration::from_millis(200), 7)
            })
        });
        // Accepted in this order: a probe that closes at once, one that says nothing, then
        // process 1, whose introduction comes in two parts.
        drop(TcpStream::connect(address).unwrap());
        let silent = TcpStream::connect(address).unwrap();
        let mut process = TcpStream::connect(address).unwrap();
        process.set_nodelay(true).unwrap();
        process.write_all(&hello(1, 7)[..3]).unwrap();
        process.write_all(&hello(1, 7)[3..]).unwrap();
        let accepted = accepting.join().unwrap().unwrap();
        let peers: Vec<_> = accepted.iter().map(|s| s.peer_addr().unwrap()).collect();
        assert_eq!(peers, [process.local_addr().unwrap()]);
        assert_eq!(
            accepted[0].read_timeout().unwrap(),
            None,
            "timely reads it blocking"
        );
        drop(silent);
    }

    /// The error of process `me` (with `later` processes after it, options' fingerprint 7) when
    /// connections introduce themselves with `hellos`, in order.
    fn refusal(hellos: &[[u8; 16]], me: usize, later: usize) -> io::Error {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peers: Vec<TcpStream> = (hellos.iter())
            .map(|hello| {
                let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                peer.write_all(hello).unwrap();
                peer
            })
            .collect();
        let error = within_30s("accepting a refused process", move || {
            accept(&[listener], me, later, HANDSHAKE, 7)
        })
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        drop(peers);
        error
    }

    #[test]
    fn a_connection_that_names_no_later_process_is_an_error() {
        let error = refusal(&[hello(0, 7)], 1, 2);
        assert!(
            error.to_string().contains("process 0, not one after 1"),
            "{error}"
        );
    }

    /// Two copies of process 1 while process 0 waits for process 2 too: the second did not
    /// take the first one's place (which would then go on into timely on a socket no one reads).
    #[test]
    fn a_process_that_connects_twice_is_an_error() {
        let error = refusal(&[hello(1, 7), hello(1, 7)], 0, 2);
        assert!(
            error.to_string().contains("process 1 connected twice"),
            "{error}"
        );
    }

    /// A connection closed before it sent its 16 bytes (a TCP health check) is given up on at
    /// once, not read until the handshake's time is up: accepting waits on it meanwhile.
    #[test]
    fn a_connection_closed_before_its_handshake_is_dropped_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        peer.write_all(&hello(1, 7)[..5]).unwrap();
        drop(peer);
        let (mut stream, _) = listener.accept().unwrap();
        let error = within_30s("reading a closed connection's handshake", move || {
            introduction(&mut stream, Duration::from_secs(60))
        })
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    }

    #[test]
    fn an_address_that_cannot_be_one_is_an_error_at_once() {
        for address in ["host-without-port", "127.0.0.1:port", "127.0.0.1", ""] {
            let error =
                within_30s("dialling", move || dial(address, 0, 1, 7).map(|_| ())).unwrap_err();
            assert_eq!(
                error.kind(),
                io::ErrorKind::InvalidInput,
                "{address}: {error}"
            );
            assert!(
                error.to_string().starts_with("process 0's address"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_line_of_several_addresses_is_dialled_at_its_first() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let line = format!("{} 127.0.0.1:1", listener.local_addr().unwrap());
        // The connect completes in the listener's backlog, before it is accepted.
        let dialled = std::thread::spawn(move || dial(&line, 0, 1, 7).map(|s| s.peer_addr()));
        let process_0 = of_process(7, 0);
        assert_eq!(introduced(&listener, process_0), (1, process_0));
        let peer = dialled.join().unwrap().unwrap().unwrap();
        assert_eq!(peer, listener.local_addr().unwrap());
    }

    /// A process that cannot listen on its own line names the line and the address (it said
    /// only the system's error, as if another process's name did not resolve).
    #[test]
    fn a_process_that_cannot_listen_names_its_line() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let lines = ["127.0.0.1:1".to_string(), address.clone()];
        let error = connect(&lines, 1, 7).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!(
                "listening on {address} (line 2 of the hostfile, this process's): "
            )),
            "{error}"
        );
    }

    /// A second copy of a process, started after the job has formed, is turned away at once:
    /// the earlier process's listener was closed, and the copy retried for ever.
    #[test]
    fn a_process_that_comes_after_the_job_formed_is_turned_away() {
        let free = || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let addresses = vec![free(), free()];
        let lines = addresses.clone();
        let first = std::thread::spawn(move || connect(&lines, 0, 7));
        let lines = addresses.clone();
        let second = within_30s("process 1", move || connect(&lines, 1, 7)).unwrap();
        let first = first.join().unwrap().unwrap();
        let lines = addresses.clone();
        let error = within_30s("a second process 1", move || {
            connect(&lines, 1, 7).map(|_| ())
        })
        .unwrap_err();
        assert!(
            error.to_string().starts_with(
                "process 0 did not take this process (1) in: it closed the connection: its job has formed"
            ),
            "{error}"
        );
        // The job's own connection is untouched.
        let (mut a, mut b) = (first[1].as_ref().unwrap(), second[0].as_ref().unwrap());
        a.write_all(b"ok").unwrap();
        let mut got = [0u8; 2];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
    }

    /// The connecting process of a mismatch says so too: the earlier one replies with its
    /// fingerprint. It went on into timely, which panicked on the closed socket.
    #[test]
    fn a_process_told_of_other_options_is_an_error_too() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let dialled = std::thread::spawn(move || dial(&address, 0, 1, 7).map(|_| ()));
        assert_eq!(introduced(&listener, 8), (1, of_process(7, 0)));
        let error = dialled.join().unwrap().unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("process 1 was started with other options than process 0"),
            "{error}"
        );
    }

    /// Processes whose hostfiles list the earlier ones in another order are refused: process 2
    /// dials process 1 as process 0 and process 0 as process 1. The handshake carried only the
    /// dialler's own index, and timely panicked once the job formed.
    #[test]
    fn hostfiles_in_another_order_are_refused() {
        let free = || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let lines = vec![free(), free(), free()];
        let swapped = vec![lines[1].clone(), lines[0].clone(), lines[2].clone()];
        let processes: Vec<_> = [(lines.clone(), 0), (lines, 1), (swapped, 2)]
            .into_iter()
            .map(|(lines, me)| std::thread::spawn(move || connect(&lines, me, 7).map(|_| ())))
            .collect();
        // Process 0 waits on (logged) for a process 2 that is gone: it cannot tell. Processes
        // 1 and 2 end, each saying why.
        let errors: Vec<String> = within_30s("processes 1 and 2", move || {
            (processes.into_iter().skip(1))
                .map(|p| p.join().unwrap().unwrap_err().to_string())
                .collect()
        });
        for error in errors {
            assert!(
                error.contains("process 2 was started with other options than process ")
                    && error.contains("a hostfile listing the processes in another order"),
                "{error}"
            );
        }
    }

    /// A process whose options differ (another fingerprint) is refused: its results differ, and
    /// the job published a mix of both, exit 0.
    #[test]
    fn a_process_with_other_options_is_an_error() {
        let error = refusal(&[hello(1, 8)], 0, 1);
        assert!(
            error
                .to_string()
                .starts_with("process 1 was started with other options than process 0"),
            "{error}"
        );
    }
}
