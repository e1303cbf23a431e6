//! Connections between the processes of a job (`-n`, `-p`, `-h`), then timely's own execution.
//!
//! Timely connects the processes of a cluster itself, but its listener polls for connections
//! once a second, so every job of several processes started a second late, and it reports the
//! wait on stdout, which carries the results with `--out -`. Here each process connects the same
//! way, only at once and quietly: process `p` listens on its address(es) of the hostfile and
//! accepts every later process as soon as it connects; it connects to every earlier one,
//! retrying every 10 ms until that one listens (processes start in any order, on any host, so
//! it retries for as long as it takes, and says so on the log every 5 s). The handshake is
//! timely's own (the connecting process's index, a big-endian `u64`), and the sockets go to
//! timely's `initialize_networking_from_sockets`, which does everything else as `execute` would.
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

/// `timely::execute`, with the processes of a cluster connected as the module doc says.
pub fn execute<T, F>(config: timely::Config, func: F) -> Result<WorkerGuards<T>, String>
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
    let sockets =
        connect(addresses, process).map_err(|e| format!("failed to connect the processes: {e}"))?;
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

/// One socket per process, in process order, `None` at `me`: connected to the earlier processes,
/// accepted from the later ones.
fn connect(addresses: &[String], me: usize) -> io::Result<Vec<Option<TcpStream>>> {
    // Listening first: later processes may already be trying.
    let listeners = addresses[me]
        .split_whitespace()
        .map(TcpListener::bind)
        .collect::<io::Result<Vec<_>>>()?;
    let later = addresses.len() - me - 1;
    let accepting = std::thread::spawn(move || accept(&listeners, me, later));
    let mut sockets: Vec<Option<TcpStream>> = Vec::with_capacity(addresses.len());
    for (index, address) in addresses.iter().enumerate().take(me) {
        sockets.push(Some(dial(address, index, me)?));
    }
    sockets.push(None);
    let accepted = accepting
        .join()
        .map_err(|_| io::Error::other("the accepting thread panicked"))??;
    sockets.extend(accepted.into_iter().map(Some));
    Ok(sockets)
}

/// Connects to process `index` at `address`, retrying until it listens, and introduces `me`.
fn dial(address: &str, index: usize, me: usize) -> io::Result<TcpStream> {
    let mut reported = Instant::now();
    loop {
        match TcpStream::connect(address) {
            Ok(mut stream) => {
                stream.set_nodelay(true)?;
                stream.write_all(&(me as u64).to_be_bytes())?;
                return Ok(stream);
            }
            Err(error) => {
                if reported.elapsed() >= REPORT {
                    tracing::info!(process = index, address, %error, "waiting for a process to listen");
                    reported = Instant::now();
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// Accepts the `later` processes after `me`, on any of the listeners, in process order.
fn accept(listeners: &[TcpListener], me: usize, later: usize) -> io::Result<Vec<TcpStream>> {
    let mut accepted: Vec<Option<TcpStream>> = (0..later).map(|_| None).collect();
    if let [listener] = listeners {
        // One address (the usual case): block on it.
        while accepted.iter().any(Option::is_none) {
            let (stream, _) = listener.accept()?;
            place(stream, me, &mut accepted)?;
        }
    } else {
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
                        place(stream, me, &mut accepted)?;
                        any = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if !any {
                if reported.elapsed() >= REPORT {
                    let waiting = accepted.iter().filter(|s| s.is_none()).count();
                    tracing::info!(waiting, "waiting for processes to connect");
                    reported = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    Ok(accepted.into_iter().flatten().collect())
}

/// Reads the index a connecting process introduces itself with and files its socket under it.
fn place(mut stream: TcpStream, me: usize, accepted: &mut [Option<TcpStream>]) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut index = [0u8; 8];
    stream.read_exact(&mut index)?;
    let index = u64::from_be_bytes(index) as usize;
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
    *slot = Some(stream);
    Ok(())
}
