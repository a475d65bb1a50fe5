//! A PostgreSQL cluster owned by one test, which it may stop and start again (outage tests),
//! made by `scripts/pg-tmp` and removed by a drop guard however the test ends.
//!
//! `pg-tmp` runs clusters with `fsync`, `synchronous_commit` and `full_page_writes` off (fast,
//! and lost in a crash); [`PgCluster::start_durable`] restarts one with them on, for tests that
//! crash the server itself ([`PgCluster::kill_postmaster`]) and check that nothing acknowledged
//! is lost.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Exit code of `scripts/pg-tmp start` when no PostgreSQL binaries are installed.
const NO_BINARIES: i32 = 3;

/// Why no cluster was started.
#[derive(Debug)]
pub enum NoCluster {
    /// No PostgreSQL binaries on this machine; the message carries the install line.
    NoBinaries(String),
}

/// What [`PgCluster::kill_postmaster`] left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crashed {
    /// The killed postmaster's PID.
    pub postmaster: u32,
    /// Its children (backends and auxiliary processes) when it was killed.
    pub backends: Vec<u32>,
}

/// How [`PgCluster::start_server_after_crash`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// Time the `pg_ctl start` that succeeded took (crash recovery included).
    pub took: Duration,
    /// Time spent in starts refused before it (zero when the first start succeeded).
    pub refused_for: Duration,
    /// The first start was refused by the stale `postmaster.pid` of the killed (zombie)
    /// postmaster, which was removed before the retry.
    pub removed_stale_lock: bool,
}

/// A throw-away cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    script: PathBuf,
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    url: String,
    durable: AtomicBool,
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
            durable: AtomicBool::new(false),
        })
    }

    /// Starts a cluster like [`start`](Self::start), then restarts its server with `fsync`,
    /// `synchronous_commit` and `full_page_writes` on, so that a commit the server acknowledged
    /// survives a crash of the server. Later [`start_server`](Self::start_server) calls keep
    /// them on.
    pub fn start_durable() -> Result<Self, NoCluster> {
        let cluster = Self::start()?;
        cluster.stop_server();
        cluster.set_durable(true);
        cluster.start_server();
        Ok(cluster)
    }

    /// Whether [`start_server`](Self::start_server) turns `fsync`, `synchronous_commit` and
    /// `full_page_writes` on (true) or off (false, `pg-tmp`'s default). Takes effect at the next
    /// start.
    pub fn set_durable(&self, durable: bool) {
        self.durable.store(durable, Ordering::SeqCst);
    }

    /// The PID of the running postmaster: the first line of `data/postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        lock_pid(&self.dir.join("data").join("postmaster.pid"))
    }

    /// Crashes the server: SIGKILLs the postmaster (as root, which may signal the `postgres`
    /// user's processes), with no warning to it or its backends. The backends notice their
    /// parent is gone and exit on their own; shared memory and `postmaster.pid` stay behind, as
    /// after a real crash. Returns what [`start_server_after_crash`](Self::start_server_after_crash)
    /// needs to wait for.
    pub fn kill_postmaster(&self) -> Crashed {
        self.kill(false)
    }

    /// Crashes the whole server at once, as an OOM kill of its cgroup or a power cut would:
    /// SIGKILLs the postmaster and every backend in one `kill`. Unlike
    /// [`kill_postmaster`](Self::kill_postmaster), where backends finish the statement they are
    /// running (a commit in flight completes and is answered) before they notice, this cuts
    /// commits in flight: some are durable but never answered.
    pub fn kill_postmaster_and_backends(&self) -> Crashed {
        self.kill(true)
    }

    fn kill(&self, with_backends: bool) -> Crashed {
        let postmaster = self
            .postmaster_pid()
            .unwrap_or_else(|| panic!("no postmaster.pid in {}", self.dir.display()));
        let backends = children_of(postmaster);
        let mut targets = vec![postmaster.to_string()];
        if with_backends {
            targets.extend(backends.iter().map(u32::to_string));
        }
        let status = Command::new("kill")
            .arg("-KILL")
            .args(&targets)
            .status()
            .unwrap_or_else(|e| panic!("running kill: {e}"));
        // A backend may exit on its own between listing and kill: only the postmaster must die.
        assert!(
            status.success() || (with_backends && !is_alive(postmaster)),
            "kill -KILL {targets:?} failed ({status})"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_alive(postmaster) {
            assert!(
                Instant::now() < deadline,
                "postmaster {postmaster} survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Crashed {
            postmaster,
            backends,
        }
    }

    /// Starts the server after [`kill_postmaster`](Self::kill_postmaster), which runs crash
    /// recovery from the WAL.
    ///
    /// First waits until the crashed server's backends have exited: PostgreSQL refuses to start
    /// while they still hold the old shared memory. Then starts it. If the start is refused
    /// because `postmaster.pid` names a process that still exists although it is dead — the
    /// killed postmaster is a zombie until its parent (here PID 1, as `pg_ctl` detaches it)
    /// reaps it, and PostgreSQL's `kill(pid, 0)` liveness check counts zombies as running —
    /// the stale lock file is removed and the start retried once. That is safe only because
    /// the postmaster and every backend are known to be dead (no process holds the data
    /// directory or the shared memory); recovery is decided by `pg_control`, not by the lock
    /// file, so it still runs.
    pub fn start_server_after_crash(&self, crashed: &Crashed) -> Restart {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(pid) = crashed.backends.iter().copied().find(|&pid| is_alive(pid)) {
            assert!(
                Instant::now() < deadline,
                "backend {pid} of the killed postmaster did not exit within 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut started = Instant::now();
        let mut refused_for = Duration::ZERO;
        let mut removed_stale_lock = false;
        let locks = [
            self.dir.join("data").join("postmaster.pid"),
            self.dir
                .join("sock")
                .join(format!(".s.PGSQL.{}.lock", self.port)),
        ];
        while let Err(refused) = self.try_start_server() {
            let dead =
                !is_alive(crashed.postmaster) && crashed.backends.iter().all(|&pid| !is_alive(pid));
            let stale: Vec<&PathBuf> = locks
                .iter()
                .filter(|lock| lock_pid(lock) == Some(crashed.postmaster))
                .collect();
            assert!(
                dead && !stale.is_empty(),
                "the server did not start after the crash: {refused}"
            );
            for lock in stale {
                std::fs::remove_file(lock)
                    .unwrap_or_else(|e| panic!("removing {}: {e}", lock.display()));
            }
            removed_stale_lock = true;
            refused_for += started.elapsed();
            started = Instant::now();
        }
        Restart {
            took: started.elapsed(),
            refused_for,
            removed_stale_lock,
        }
    }

    /// The server URL (database `postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far (every start of this cluster appends to it).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
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
        self.try_start_server()
            .unwrap_or_else(|e| panic!("starting the server: {e}"));
        started.elapsed()
    }

    fn try_start_server(&self) -> Result<(), String> {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let durable = if self.durable.load(Ordering::SeqCst) {
            "on"
        } else {
            "off"
        };
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync={durable} \
             -c synchronous_commit={durable} -c full_page_writes={durable} -c max_connections=300 \
             -c shared_buffers=128MB",
            self.port,
            self.dir.join("sock").display()
        );
        self.try_pg_ctl(&[
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
        ])
        .map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}\nlast lines of the server log:\n{}", tail.join("\n"))
        })
    }

    fn pg_ctl(&self, args: &[&str]) {
        if let Err(e) = self.try_pg_ctl(args) {
            panic!("{e}");
        }
    }

    fn try_pg_ctl(&self, args: &[&str]) -> Result<(), String> {
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
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl {args:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
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

/// The PID on the first line of a PostgreSQL lock file.
fn lock_pid(lock: &Path) -> Option<u32> {
    std::fs::read_to_string(lock)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// True while process `pid` exists and is not a zombie.
fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The PIDs of the live children of `parent`, read from `/proc`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
