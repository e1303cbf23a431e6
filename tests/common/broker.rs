//! A `tampines broker` in its own process, and children killed with a failing test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `tampines broker` child process, stopped with SIGTERM on drop.
pub struct Broker {
    pub child: Child,
    pub bootstrap: String,
}

impl Broker {
    pub fn start(partitions: u32, topics: &str) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args([
                "broker",
                "--partitions",
                &partitions.to_string(),
                "--topics",
                topics,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start broker");
        // Its first line, within 60 s (read on a thread: a broker that never says it waited
        // for ever).
        let stdout = child.stdout.take().unwrap();
        let (send, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = send.send(line);
        });
        let line = said
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the broker said nothing within 60 s")
            });
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap=")
            .expect("bootstrap=HOST:PORT")
            .to_string();
        Broker { child, bootstrap }
    }

    /// SIGTERM, then the exit status, within 60 s.
    pub fn stop(mut self) -> std::process::ExitStatus {
        super::signalled(&mut self.child, "TERM").expect("the broker stops within 60 s of SIGTERM")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when the test ends, pass or fail (no stray jobs after a panic).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
