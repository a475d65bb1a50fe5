//! A PostgreSQL cluster owned by one test, which it may stop and start again (outage tests),
//! made by `scripts/pg-tmp` and removed by a drop guard however the test ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Exit code of `scripts/pg-tmp start` when no PostgreSQL binaries are installed.
const NO_BINARIES: i32 = 3;

/// Why no cluster was started.
#[derive(Debug)]
pub enum NoCluster {
    /// No PostgreSQL binaries on this machine; the message carries the install line.
    NoBinaries(String),
}

/// A throw-away cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    script: PathBuf,
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    url: String,
}

/// `scripts/pg-tmp` of this workspace.
pub fn pg_tmp_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-tmp")
}

impl PgCluster {
    /// Starts a cluster with `scripts/pg-tmp start`, owned by this process.
    pub fn start() -> Result<Self, NoCluster> {
        let script = pg_tmp_script();
        let output = Command::new(&script)
            .arg("start")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.code() == Some(NO_BINARIES) {
            return Err(NoCluster::NoBinaries(stderr));
        }
        assert!(
            output.status.success(),
            "pg-tmp start failed ({}): {stderr}",
            output.status
        );
        let url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let port: u16 = url
            .rsplit(':')
            .next()
            .and_then(|rest| rest.split('/').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {url:?}"));
        let base = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join("esa-pg");
        let dir = std::fs::read_dir(&base)
            .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|dir| {
                std::fs::read_to_string(dir.join("port"))
                    .is_ok_and(|p| p.trim() == port.to_string())
            })
            .unwrap_or_else(|| panic!("no pg-tmp cluster directory for port {port}"));
        let bindir = std::fs::read_to_string(dir.join("bindir"))
            .map(|b| PathBuf::from(b.trim()))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join("bindir").display()));
        Ok(Self {
            script,
            dir,
            bindir,
            port,
            url,
        })
    }

    /// The server URL (database `postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (`pg_ctl stop -m fast`: connections are terminated, transactions in
    /// flight abort). Returns how long it took.
    pub fn stop_server(&self) -> Duration {
        let started = Instant::now();
        let data = self.dir.join("data");
        self.pg_ctl(&["-D", path(&data), "-m", "fast", "-w", "-t", "60", "stop"]);
        started.elapsed()
    }

    /// Starts the server again on the same data directory and port. Returns how long it took.
    pub fn start_server(&self) -> Duration {
        let started = Instant::now();
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
             -c shared_buffers=128MB",
            self.port,
            self.dir.join("sock").display()
        );
        self.pg_ctl(&[
            "-D",
            path(&data),
            "-l",
            path(&log),
            "-w",
            "-t",
            "60",
            "-s",
            "-o",
            &options,
            "start",
        ]);
        started.elapsed()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.bindir.join("pg_ctl");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let output = command
            .args(args)
            .current_dir("/")
            .output()
            .unwrap_or_else(|e| panic!("running pg_ctl: {e}"));
        assert!(
            output.status.success(),
            "pg_ctl {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let stopped = Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
        match stopped {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "pg-tmp stop {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!("pg-tmp stop {}: {e}", self.dir.display()),
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
