//! A real `redis-server` (Debian package) for the tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    child: Child,
    pub url: String,
}

impl RedisServer {
    /// Starts one (installing the Debian package when missing) and waits until it answers.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts one with `extra` options as well (a TLS port, for one).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        super::ensure_package("redis-server", || {
            Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok()
        });
        // A port picked free may be taken before the server binds it (by another test's
        // server or job): the server then exits, and another server would answer on it. So a
        // server counts as started once the one answering is this one (its process id), and
        // one that exited is started again on another port.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
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
                .args(extra)
                .stdout(Stdio::null())
                .spawn()
                .expect("start redis-server");
            let mut server = RedisServer {
                child,
                url: format!("redis://127.0.0.1:{port}/0"),
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
