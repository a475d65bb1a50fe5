//! A TCP fault-injection proxy for tests: it sits between a client (e.g. an sqlx pool) and a
//! server (e.g. PostgreSQL) on 127.0.0.1 and cuts, stalls or closes the connections it carries.
//!
//! Every accepted connection gets its own connection to the upstream and two pumps, one per
//! direction, that read a chunk (one `read`, at most 16 KiB) and write it out. Before a chunk is
//! forwarded the [`CutPolicy`] is rolled, once per chunk, with a seeded RNG: a chunk is cut with
//! the probability of its direction, except the first `skip_first_chunks` chunks of each
//! direction of a connection (the PostgreSQL start-up and authentication). A cut
//!
//! - of a server→client chunk drops it and closes both sockets: the server has done the work
//!   (e.g. committed), the client never sees the answer ([`CutStats::after_server_answer`]);
//! - of a client→server chunk, with probability 1/2 each, drops it and closes both sockets
//!   (nothing sent, [`CutStats::before_forward`]) or forwards it and then closes (sent, answer
//!   lost, [`CutStats::after_forward`]).
//!
//! Closing is abrupt: the client socket is reset (`SO_LINGER` 0), and so is the server socket,
//! except after a forwarded chunk, where it is closed normally so the chunk is delivered.
//!
//! [`FaultProxy::stall`] turns every connection, open or new, into a black hole without closing
//! it; [`FaultProxy::resume`] lets the held data through, in order. Dropping the proxy stops the
//! listener and closes every connection.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::pg_wire::StatementCounter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Size of the buffer of each pump: the largest chunk.
const CHUNK: usize = 16 * 1024;

/// When the proxy cuts a connection. Probabilities are per forwarded chunk, in `0.0..=1.0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CutPolicy {
    /// Probability that a server→client chunk is dropped and the connection closed.
    pub server_to_client: f64,
    /// Probability that a client→server chunk triggers a cut (before or after forwarding it).
    pub client_to_server: f64,
    /// Chunks of each direction of a connection that are never cut (the start-up handshake).
    pub skip_first_chunks: u64,
}

impl Default for CutPolicy {
    /// Never cut; skip the first 4 chunks per direction once cutting is enabled.
    fn default() -> Self {
        Self {
            server_to_client: 0.0,
            client_to_server: 0.0,
            skip_first_chunks: 4,
        }
    }
}

/// Connections closed by the proxy, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutStats {
    /// A server→client chunk dropped: the server answered, the client never saw it.
    pub after_server_answer: u64,
    /// A client→server chunk dropped: the server never got it.
    pub before_forward: u64,
    /// A client→server chunk forwarded, then the connection closed: the answer is lost.
    pub after_forward: u64,
    /// Connections closed by [`FaultProxy::cut_all`].
    pub cut_all: u64,
}

impl CutStats {
    /// All cuts, whatever the reason.
    pub fn total(&self) -> u64 {
        self.after_server_answer + self.before_forward + self.after_forward + self.cut_all
    }
}

/// What the proxy has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Connections cut, by reason.
    pub cuts: CutStats,
    /// Bytes forwarded from the clients to the server.
    pub bytes_client_to_server: u64,
    /// Bytes forwarded from the server to the clients.
    pub bytes_server_to_client: u64,
    /// PostgreSQL statements the clients ran (`Execute` and `Query` messages forwarded, see
    /// [`pg_wire`](crate::pg_wire)); meaningless for other protocols.
    pub pg_statements: u64,
}

/// A TCP proxy on 127.0.0.1 that injects faults; see the module documentation. Its controls
/// take `&self`: wrap it in an `Arc` to share it between tasks.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    dice: Mutex<(CutPolicy, StdRng)>,
    stalled: watch::Sender<bool>,
    kill: watch::Sender<()>,
    connections: AtomicU64,
    cuts: [AtomicU64; 4],
    bytes: [AtomicU64; 2],
    pg_statements: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ClientToServer = 0,
    ServerToClient = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    AfterServerAnswer = 0,
    BeforeForward = 1,
    AfterForward = 2,
    All = 3,
}

/// How one pump ended.
enum Flow {
    /// The source closed; the write side of the destination was shut down.
    Eof,
    /// An I/O error: the connection is closed without counting a cut.
    Broken,
    /// The policy chose to cut.
    Cut(Cut),
}

impl FaultProxy {
    /// Starts a proxy to `upstream` with a random seed (printed, to replay with
    /// [`FaultProxy::start_seeded`]). Must be called inside a tokio runtime.
    pub fn start(upstream: SocketAddr) -> Self {
        let seed = rand::random();
        eprintln!("fault proxy to {upstream}: seed {seed}");
        Self::start_seeded(upstream, seed)
    }

    /// Starts a proxy to `upstream` whose cut decisions come from an RNG seeded with `seed`
    /// (the sequence of decisions is reproducible; which chunk gets which depends on timing).
    /// It cuts nothing until [`FaultProxy::set_cut_probability`] is called. Must be called
    /// inside a tokio runtime.
    pub fn start_seeded(upstream: SocketAddr, seed: u64) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std)
            .unwrap_or_else(|e| panic!("binding the fault proxy on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fault proxy address: {e}"));
        let shared = Arc::new(Shared {
            dice: Mutex::new((CutPolicy::default(), StdRng::seed_from_u64(seed))),
            stalled: watch::Sender::new(false),
            kill: watch::Sender::new(()),
            connections: AtomicU64::new(0),
            cuts: Default::default(),
            bytes: Default::default(),
            pg_statements: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `database_url` (`scheme://[user[:password]@]host[:port][/db][?query]`) with its host and
    /// port replaced by the proxy's; everything else is kept.
    pub fn url_for(&self, database_url: &str) -> String {
        let (scheme, rest) = database_url
            .split_once("://")
            .unwrap_or_else(|| panic!("{database_url:?} is not a URL (no `://`)"));
        let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let user = authority.rfind('@').map_or("", |at| &authority[..=at]);
        format!("{scheme}://{user}{}{tail}", self.addr)
    }

    /// The cut policy in force.
    pub fn policy(&self) -> CutPolicy {
        self.shared.dice().0
    }

    /// Replaces the cut policy; applies to the next chunk of every connection.
    pub fn set_policy(&self, policy: CutPolicy) {
        for p in [policy.server_to_client, policy.client_to_server] {
            assert!((0.0..=1.0).contains(&p), "cut probability {p} not in 0..=1");
        }
        self.shared.dice().0 = policy;
    }

    /// Sets the probability per chunk of a cut in each direction (see the module documentation).
    pub fn set_cut_probability(&self, server_to_client: f64, client_to_server: f64) {
        self.set_policy(CutPolicy {
            server_to_client,
            client_to_server,
            ..self.policy()
        });
    }

    /// Sets how many chunks of each direction of a connection are never cut (default 4).
    pub fn set_skip_first_chunks(&self, chunks: u64) {
        self.set_policy(CutPolicy {
            skip_first_chunks: chunks,
            ..self.policy()
        });
    }

    /// Closes (resets) every open connection now; counted in [`CutStats::cut_all`].
    pub fn cut_all(&self) {
        self.shared.kill.send_replace(());
    }

    /// Stops forwarding on every connection, open or new, in both directions, without closing
    /// any: each pump holds the chunk it has read, the rest waits in the kernel buffers.
    pub fn stall(&self) {
        self.shared.stalled.send_replace(true);
    }

    /// Ends a [`FaultProxy::stall`]: the held data is delivered, in order, and traffic flows.
    pub fn resume(&self) {
        self.shared.stalled.send_replace(false);
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> ProxyStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        let cuts = &self.shared.cuts;
        ProxyStats {
            connections: load(&self.shared.connections),
            cuts: CutStats {
                after_server_answer: load(&cuts[Cut::AfterServerAnswer as usize]),
                before_forward: load(&cuts[Cut::BeforeForward as usize]),
                after_forward: load(&cuts[Cut::AfterForward as usize]),
                cut_all: load(&cuts[Cut::All as usize]),
            },
            bytes_client_to_server: load(&self.shared.bytes[Dir::ClientToServer as usize]),
            bytes_server_to_client: load(&self.shared.bytes[Dir::ServerToClient as usize]),
            pg_statements: load(&self.shared.pg_statements),
        }
    }
}

impl Drop for FaultProxy {
    /// Aborts the accept task, which owns the connection tasks: the listener and every
    /// connection are closed.
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Shared {
    fn dice(&self) -> std::sync::MutexGuard<'_, (CutPolicy, StdRng)> {
        self.dice.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether to cut chunk number `index` (from 0) of direction `dir`, and how.
    fn roll(&self, dir: Dir, index: u64) -> Option<Cut> {
        let mut dice = self.dice();
        let (policy, rng) = &mut *dice;
        if index < policy.skip_first_chunks {
            return None;
        }
        match dir {
            Dir::ServerToClient => rng
                .random_bool(policy.server_to_client)
                .then_some(Cut::AfterServerAnswer),
            Dir::ClientToServer => rng.random_bool(policy.client_to_server).then(|| {
                if rng.random_bool(0.5) {
                    Cut::BeforeForward
                } else {
                    Cut::AfterForward
                }
            }),
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    // Dropped with this task (on drop of the proxy), which aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((client, _)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let kill = shared.kill.subscribe();
                connections.spawn(serve(client, upstream, Arc::clone(&shared), kill));
            }
            // E.g. out of file descriptors: wait instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Carries one connection until both directions end, a cut, or [`FaultProxy::cut_all`].
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut kill: watch::Receiver<()>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let cut = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, Dir::ClientToServer, &shared);
        let down = pump(server_read, client_write, Dir::ServerToClient, &shared);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let flow = tokio::select! {
                flow = &mut up, if !up_done => { up_done = true; flow }
                flow = &mut down, if !down_done => { down_done = true; flow }
                killed = kill.changed() => break killed.is_ok().then_some(Cut::All),
            };
            match flow {
                Flow::Eof if !(up_done && down_done) => {}
                Flow::Eof | Flow::Broken => break None,
                Flow::Cut(cut) => break Some(cut),
            }
        }
    };
    if let Some(cut) = cut {
        // Counted before the sockets close, so a client that saw the close sees the count.
        shared.cuts[cut as usize].fetch_add(1, Ordering::SeqCst);
        let _ = client.set_zero_linger();
        if cut != Cut::AfterForward {
            let _ = server.set_zero_linger();
        }
    }
}

/// Forwards chunks from `from` to `to`, holding them while the proxy is stalled.
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, dir: Dir, shared: &Shared) -> Flow {
    let mut stalled = shared.stalled.subscribe();
    let mut buf = vec![0; CHUNK];
    let mut index = 0;
    let mut wire = StatementCounter::default();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Flow::Eof;
            }
            Ok(n) => n,
            Err(_) => return Flow::Broken,
        };
        if stalled.wait_for(|stalled| !stalled).await.is_err() {
            return Flow::Broken;
        }
        let cut = shared.roll(dir, index);
        index += 1;
        if let Some(cut @ (Cut::AfterServerAnswer | Cut::BeforeForward)) = cut {
            return Flow::Cut(cut);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return Flow::Broken;
        }
        shared.bytes[dir as usize].fetch_add(n as u64, Ordering::SeqCst);
        if dir == Dir::ClientToServer {
            let statements = wire.feed(&buf[..n]);
            shared.pg_statements.fetch_add(statements, Ordering::SeqCst);
        }
        if let Some(cut) = cut {
            return Flow::Cut(cut);
        }
    }
}

/// The server's address in `url` (`postgres://user@host:port/db`).
pub fn server_addr(url: &str) -> SocketAddr {
    let rest = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{url:?} is not a database URL"))
        .1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse()
                .unwrap_or_else(|_| panic!("{url:?}: the port is not a number")),
        ),
        None => (host_port, 5432),
    };
    (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("resolving {host_port}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{host_port} resolves to nothing (the proxy needs TCP)"))
}
