//! The demo's cluster nodes: `sample-app serve --cluster` child processes on loopback.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use uuid::Uuid;

/// How long a node may take to print its addresses (a debug build on a busy machine is slow).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeCommand {
    /// The `sample-app` executable.
    pub executable: PathBuf,
    /// The shared database.
    pub database_url: String,
    /// Each node's pool size.
    pub max_connections: u32,
    /// The nodes' `RUST_LOG`.
    pub log: String,
    /// Passed as `--cluster-max-releases-per-tick`: the demo wants the nodes balanced at once,
    /// not moved over gradually.
    pub max_releases_per_tick: usize,
}

/// Why a node did not come up.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The process could not be started.
    #[error("cannot start node {node} ({executable}): {source}")]
    Spawn {
        /// The node's number.
        node: usize,
        /// What was run.
        executable: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// It did not print its addresses.
    #[error("node {node} did not start: {reason}")]
    Startup {
        /// The node's number.
        node: usize,
        /// What it did instead.
        reason: String,
    },
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// 1, 2, 3…: how the report names it.
    pub number: usize,
    /// Its API, `http://127.0.0.1:PORT`.
    pub api: String,
    /// Its cluster node id.
    pub node_id: Uuid,
    /// The address the other nodes reach it at.
    pub advertised: String,
    /// Its process id.
    pub pid: u32,
    child: Child,
}

impl Node {
    /// Starts node `number` and waits for the two lines `serve --cluster` prints once it
    /// serves: `listening on http://…` and `cluster node ID at ADDRESS …`. Its stderr (the
    /// logs) is copied to this process's stderr, each line prefixed with the node.
    pub async fn start(number: usize, command: &NodeCommand) -> Result<Self, NodeError> {
        let mut child = Command::new(&command.executable)
            .args(["serve", "--cluster", "--listen", "127.0.0.1:0"])
            .args(["--cluster-listen", "127.0.0.1:0"])
            .args(["--database-url", &command.database_url])
            .args(["--max-connections", &command.max_connections.to_string()])
            .args([
                "--cluster-max-releases-per-tick",
                &command.max_releases_per_tick.to_string(),
            ])
            .env("RUST_LOG", &command.log)
            .env_remove("LEDGER_ADVERTISE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Whatever ends the demo early (an error, Ctrl-C) ends its nodes too.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| NodeError::Spawn {
                node: number,
                executable: command.executable.display().to_string(),
                source,
            })?;
        let startup = |reason: String| NodeError::Startup {
            node: number,
            reason,
        };
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(copy_lines(stderr, format!("node {number} | ")));
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| startup("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let api = match next_line(&mut lines, &mut child).await {
            Ok(line) => line
                .strip_prefix("listening on ")
                .map(str::to_owned)
                .ok_or_else(|| startup(format!("unexpected first line {line:?}")))?,
            Err(reason) => return Err(startup(reason)),
        };
        let line = next_line(&mut lines, &mut child).await.map_err(startup)?;
        let (node_id, advertised) = parse_cluster_line(&line)
            .ok_or_else(|| startup(format!("unexpected second line {line:?}")))?;
        // Keep reading: a closed pipe would make the node's next print fail.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let pid = child
            .id()
            .ok_or_else(|| startup("exited right after starting".into()))?;
        Ok(Self {
            number,
            api,
            node_id,
            advertised,
            pid,
            child,
        })
    }

    /// SIGKILL (what `Child::start_kill` sends on Unix): no leave, no hand-over, no
    /// passivation; then reaps the process.
    pub async fn kill(&mut self) -> std::io::Result<ExitStatus> {
        self.child.start_kill()?;
        self.child.wait().await
    }

    /// SIGTERM, so the node leaves the cluster gracefully; SIGKILL if it has not exited within
    /// `grace`.
    pub async fn terminate(mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success());
        if sent && let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            return status;
        }
        self.kill().await
    }
}

/// The next stdout line of a starting node; why there is none otherwise.
async fn next_line(
    lines: &mut Lines<BufReader<ChildStdout>>,
    child: &mut Child,
) -> Result<String, String> {
    match tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line()).await {
        Ok(Ok(Some(line))) => Ok(line),
        Ok(Ok(None)) | Ok(Err(_)) => {
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            Err(match status {
                Ok(Ok(status)) => format!("it exited with {status} (its log is above)"),
                _ => "it closed its stdout".to_owned(),
            })
        }
        Err(_) => Err(format!(
            "no address printed within {}s",
            STARTUP_TIMEOUT.as_secs()
        )),
    }
}

/// `cluster node NODE_ID at ADDRESS (listening on BOUND)` → (node id, address).
fn parse_cluster_line(line: &str) -> Option<(Uuid, String)> {
    let rest = line.strip_prefix("cluster node ")?;
    let mut words = rest.split_whitespace();
    let node_id = words.next()?.parse().ok()?;
    (words.next()? == "at").then_some(())?;
    Some((node_id, words.next()?.to_owned()))
}

/// Copies lines to stderr with a prefix, until the stream ends.
async fn copy_lines(stream: impl AsyncRead + Unpin, prefix: String) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{prefix}{line}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_line_gives_the_node_id_and_the_advertised_address() {
        let id = Uuid::now_v7();
        let line = format!("cluster node {id} at 127.0.0.1:4101 (listening on 127.0.0.1:4101)");
        assert_eq!(
            parse_cluster_line(&line),
            Some((id, "127.0.0.1:4101".to_owned()))
        );
        assert_eq!(parse_cluster_line("listening on http://x"), None);
        assert_eq!(parse_cluster_line("cluster node nope at 1:2"), None);
    }
}
