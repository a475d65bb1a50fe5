//! The fault-injection proxy on its own, against tiny servers on 127.0.0.1 (no PostgreSQL):
//! it forwards intact when it does not cut, drops the server's answer after the server did the
//! work, cuts client chunks before or after forwarding them, skips the first chunks, stalls
//! without closing and delivers the held data on resume, closes everything on `cut_all` and on
//! drop, and rewrites database URLs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::proxy::{CutPolicy, CutStats, FaultProxy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SEED: u64 = 7;
const PATIENCE: Duration = Duration::from_secs(5);

/// An echo server; returns its address.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// A line server: records each request line, then answers `answer to <line>\n`.
async fn line_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    record.lock().unwrap().push(line.clone());
                    let answer = format!("answer to {line}\n");
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A client of [`line_server`] through the proxy.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    async fn connect(proxy: &FaultProxy) -> Self {
        let stream = TcpStream::connect(proxy.addr()).await.unwrap();
        Self {
            reader: BufReader::new(stream),
        }
    }

    async fn send(&mut self, line: &str) {
        let bytes = format!("{line}\n");
        self.reader
            .get_mut()
            .write_all(bytes.as_bytes())
            .await
            .unwrap();
    }

    /// The next answer line, or `None` if nothing came within `wait`.
    async fn answer_within(&mut self, wait: Duration) -> Option<String> {
        let mut line = String::new();
        let read = tokio::time::timeout(wait, self.reader.read_line(&mut line)).await;
        match read {
            Err(_) => None,
            Ok(Ok(n)) if n > 0 => Some(line),
            Ok(outcome) => panic!("the connection closed ({outcome:?}) instead of answering"),
        }
    }

    async fn request(&mut self, line: &str) -> String {
        self.send(line).await;
        self.answer_within(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("no answer to {line:?}"))
    }

    /// Reads until the connection closes (EOF or reset); returns what came before. Panics if it
    /// stays open.
    async fn read_until_closed(mut self) -> Vec<u8> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(PATIENCE, async {
            let mut buf = [0; 1024];
            loop {
                match self.reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        read.await.expect("the connection stayed open");
        got
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cuts_every_byte_goes_through_both_ways() {
    let proxy = FaultProxy::start_seeded(echo_server().await, SEED);
    proxy.set_cut_probability(0.0, 0.0);
    proxy.set_skip_first_chunks(0);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let sent: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let (mut read, mut write) = stream.split();
    let writing = async {
        for part in sent.chunks(7_777) {
            write.write_all(part).await.unwrap();
        }
        write.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let reading = read.read_to_end(&mut echoed);
    let (_, read_result) = tokio::time::timeout(PATIENCE, async { tokio::join!(writing, reading) })
        .await
        .expect("the echo did not finish");
    read_result.unwrap();
    assert!(echoed == sent, "the echo differs from what was sent");
    let stats = proxy.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.cuts, CutStats::default());
    assert_eq!(stats.bytes_client_to_server, sent.len() as u64);
    assert_eq!(stats.bytes_server_to_client, sent.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_to_client_cut_drops_the_answer_after_the_server_got_the_request() {
    let (upstream, seen) = line_server().await;
    let proxy = FaultProxy::start_seeded(upstream, SEED);
    proxy.set_cut_probability(1.0, 0.0);
    proxy.set_skip_first_chunks(0);
    let mut client = Client::connect(&proxy).await;
    client.send("commit 1").await;
    let got = client.read_until_closed().await;
    assert!(
        got.is_empty(),
        "the client got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["commit 1"],
        "the server got the request"
    );
    let stats = proxy.stats();
    let expected = CutStats {
        after_server_answer: 1,
        ..CutStats::default()
    };
    assert_eq!(stats.cuts, expected);
    assert_eq!(stats.bytes_client_to_server, "commit 1\n".len() as u64);
    assert_eq!(stats.bytes_server_to_client, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunks_of_a_connection_are_never_cut() {
    let (upstream, seen) = line_server().await;
    let proxy = FaultProxy::start_seeded(upstream, SEED);
    assert_eq!(proxy.policy(), CutPolicy::default());
    proxy.set_cut_probability(1.0, 0.0);
    let mut client = Client::connect(&proxy).await;
    for i in 0..4 {
        assert_eq!(
            client.request(&format!("q{i}")).await,
            format!("answer to q{i}\n")
        );
    }
    client.send("q4").await;
    assert!(client.read_until_closed().await.is_empty());
    wait_until("the server to get q4", || seen.lock().unwrap().len() == 5).await;
    assert_eq!(proxy.stats().cuts.after_server_answer, 1);
    assert_eq!(proxy.stats().cuts.total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_to_server_cut_drops_or_forwards_the_chunk_then_closes() {
    let (upstream, seen) = line_server().await;
    let proxy = FaultProxy::start_seeded(upstream, SEED);
    proxy.set_cut_probability(0.0, 1.0);
    proxy.set_skip_first_chunks(0);
    const CONNECTIONS: u64 = 40;
    for i in 0..CONNECTIONS {
        let mut client = Client::connect(&proxy).await;
        client.send(&format!("write {i}")).await;
        assert!(
            client.read_until_closed().await.is_empty(),
            "an answer came"
        );
    }
    let cuts = proxy.stats().cuts;
    assert_eq!(cuts.before_forward + cuts.after_forward, CONNECTIONS);
    assert_eq!(cuts.total(), CONNECTIONS);
    assert!(
        cuts.before_forward > 0 && cuts.after_forward > 0,
        "{cuts:?}"
    );
    // Exactly the forwarded chunks reached the server.
    wait_until("the forwarded requests to arrive", || {
        seen.lock().unwrap().len() as u64 >= cuts.after_forward
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.lock().unwrap().len() as u64, cuts.after_forward);
    assert_eq!(proxy.stats().bytes_server_to_client, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_holds_traffic_without_closing_and_resume_delivers_it() {
    let (upstream, seen) = line_server().await;
    let proxy = FaultProxy::start_seeded(upstream, SEED);
    let mut open = Client::connect(&proxy).await;
    assert_eq!(open.request("before").await, "answer to before\n");

    proxy.stall();
    open.send("during").await;
    let mut new = Client::connect(&proxy).await;
    new.send("new during").await;
    // `answer_within` panics on EOF or reset: a timeout means the sockets stayed open.
    assert_eq!(open.answer_within(Duration::from_millis(300)).await, None);
    assert_eq!(new.answer_within(Duration::from_millis(300)).await, None);
    assert_eq!(
        *seen.lock().unwrap(),
        ["before"],
        "a stalled request was forwarded"
    );

    proxy.resume();
    assert_eq!(
        open.answer_within(PATIENCE).await.unwrap(),
        "answer to during\n"
    );
    assert_eq!(
        new.answer_within(PATIENCE).await.unwrap(),
        "answer to new during\n"
    );
    let mut after = Client::connect(&proxy).await;
    assert_eq!(after.request("after").await, "answer to after\n");
    assert_eq!(open.request("again").await, "answer to again\n");
    let stats = proxy.stats();
    assert_eq!(stats.connections, 3);
    assert_eq!(stats.cuts.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_all_closes_every_open_connection() {
    let (upstream, _) = line_server().await;
    let proxy = FaultProxy::start_seeded(upstream, SEED);
    let mut first = Client::connect(&proxy).await;
    let mut second = Client::connect(&proxy).await;
    assert_eq!(first.request("a").await, "answer to a\n");
    assert_eq!(second.request("b").await, "answer to b\n");
    proxy.cut_all();
    assert!(first.read_until_closed().await.is_empty());
    assert!(second.read_until_closed().await.is_empty());
    assert_eq!(proxy.stats().cuts.cut_all, 2);
    assert_eq!(proxy.stats().cuts.total(), 2);
    let mut later = Client::connect(&proxy).await;
    assert_eq!(later.request("c").await, "answer to c\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_proxy_closes_its_connections_and_listener() {
    let (upstream, _) = line_server().await;
    let proxy = FaultProxy::start_seeded(upstream, SEED);
    let addr = proxy.addr();
    let mut client = Client::connect(&proxy).await;
    assert_eq!(client.request("a").await, "answer to a\n");
    drop(proxy);
    assert!(client.read_until_closed().await.is_empty());
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(start.elapsed() < PATIENCE, "the listener is still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn url_for_points_the_url_at_the_proxy() {
    let proxy = FaultProxy::start_seeded("127.0.0.1:9".parse().unwrap(), SEED);
    let port = proxy.addr().port();
    assert_eq!(
        proxy.url_for("postgres://postgres@127.0.0.1:5432/db_1"),
        format!("postgres://postgres@127.0.0.1:{port}/db_1")
    );
    assert_eq!(
        proxy.url_for("postgres://u:p%40ss@localhost/db?sslmode=disable"),
        format!("postgres://u:p%40ss@127.0.0.1:{port}/db?sslmode=disable")
    );
    assert_eq!(
        proxy.url_for("postgresql://127.0.0.1:5432"),
        format!("postgresql://127.0.0.1:{port}")
    );
}
