//! A real `redis-server` (Debian package) for the tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    child: Child,
    pub url: String,
    /// The TLS port, for a server started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
}

impl RedisServer {
    /// Starts one (installing the Debian package when missing) and waits until it answers.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts one with `extra` options as well (a TLS port, for one).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_ports(extra, false)
    }

    /// Starts one with a TLS port as well (`tls_port`), and `extra` options (the certificates).
    /// The TLS port is picked with the plain one at each try: one picked once, outside, and taken
    /// before the server bound it, failed every try.
    pub fn start_tls(extra: &[&str]) -> RedisServer {
        RedisServer::start_ports(extra, true)
    }

    /// Makes sure `redis-server` is on PATH (installed when missing), for a test that starts
    /// none itself but needs the one a demo starts.
    pub fn ensure_installed() {
        super::ensure_package("redis-server", || {
            Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok()
        });
    }

    fn start_ports(extra: &[&str], tls: bool) -> RedisServer {
        RedisServer::ensure_installed();
        // A port picked free may be taken before the server binds it (by another test's
        // server or job): the server then exits, and another server would answer on it. So a
        // server counts as started once the one answering is this one (its process id), and
        // one that exited is started again on another port.
        for _ in 0..5 {
            let port = super::free_port();
            let tls_port = tls.then(super::free_port);
            let tls_args = tls_port.map(|p| ["--tls-port".to_string(), p.to_string()]);
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--enable-debug-command",
                    "yes",
                ])
                .args(tls_args.iter().flatten())
                .args(extra)
                .stdout(Stdio::null())
                .spawn()
                .expect("start redis-server");
            let mut server = RedisServer {
                child,
                url: format!("redis://127.0.0.1:{port}/0"),
                tls_port,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if server
                    .child
                    .try_wait()
                    .expect("redis-server's status")
                    .is_some()
                {
                    break; // it could not start (its port taken): another port
                }
                if server.is_this_one() {
                    return server;
                }
                assert!(Instant::now() < deadline, "redis-server did not answer");
                std::thread::sleep(Duration::from_millis(20)); // poll interval, bounded by the deadline
            }
        }
        panic!("redis-server did not start on any of 5 free ports")
    }

    /// Whether the server answering on this one's port is this one.
    fn is_this_one(&self) -> bool {
        let info = self
            .connection()
            .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c));
        info.is_ok_and(|info| info.contains(&format!("process_id:{}\r", self.child.id())))
    }

    /// A connection that answered PING.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let mut c = redis::Client::open(self.url.as_str())?.get_connection()?;
        redis::cmd("PING").query::<String>(&mut c)?;
        Ok(c)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
