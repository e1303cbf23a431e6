//! A `tampines broker` in its own process, and children killed with a failing test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `tampines broker` child process, stopped with SIGTERM on drop.
pub struct Broker {
    child: Child,
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
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("bootstrap line");
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap=")
            .expect("bootstrap=HOST:PORT")
            .to_string();
        Broker { child, bootstrap }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("broker exits")
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
