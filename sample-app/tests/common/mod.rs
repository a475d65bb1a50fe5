//! The real `sample-app serve` binary, started for a test: shared by the tests that drive it
//! over HTTP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A running `sample-app serve`; killed if the test ends before stopping it.
pub struct Server {
    child: Child,
    base: String,
    // Kept open: the server's stdout must not become a broken pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Server {
    /// `serve` on any free loopback port with `args` added, on PostgreSQL at `database_url`,
    /// or on in-memory stores when it is `None` (also inside `make test`, whose throw-away
    /// PostgreSQL is named by `DATABASE_URL`, which `serve` would otherwise use).
    pub async fn start(database_url: Option<&str>, args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sample-app"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args);
        match database_url {
            Some(url) => command.args(["--database-url", url]),
            None => command.env_remove("DATABASE_URL"),
        };
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start sample-app serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
            .await
            .expect("serve printed its address in time")
            .unwrap()
            .expect("serve printed a line");
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            child,
            base,
            _stdout: stdout,
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then wait for a graceful exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("server still running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !sent {
            self.child.start_kill().unwrap();
        }
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("server stopped in time")
            .unwrap()
    }
}
