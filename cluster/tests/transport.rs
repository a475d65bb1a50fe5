//! The HTTP/2 transport between nodes: round trips, multiplexing over HTTP/2, and how
//! failures are classified (`Unreachable` = not delivered, `Lost` = maybe carried out).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use actor_runtime::{Inbound, RemoteCall, Transport, TransportError, async_trait};
use cluster::{CALL_PATH, HttpTransport, HttpTransportConfig, TransportServer, serve};
use tokio::net::TcpListener;

/// Records every call it receives; answers `answer:` + directory + `/` + key + `:` + payload,
/// after sleeping `delay`.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<RemoteCall>>,
    delay: Duration,
}

impl Recorder {
    fn with_delay(delay: Duration) -> Self {
        Self {
            calls: Mutex::default(),
            delay,
        }
    }

    fn calls(&self) -> Vec<RemoteCall> {
        self.calls.lock().unwrap().clone()
    }
}

fn answer_for(call: &RemoteCall) -> Vec<u8> {
    let mut answer = format!("answer:{}/{}:", call.directory, call.key).into_bytes();
    answer.extend_from_slice(&call.payload);
    answer
}

#[async_trait]
impl Inbound for Recorder {
    async fn handle(&self, call: RemoteCall) -> Vec<u8> {
        self.calls.lock().unwrap().push(call.clone());
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        answer_for(&call)
    }
}

async fn start(inbound: Arc<Recorder>) -> TransportServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(listener, inbound)
}

fn call(key: &str, payload: Vec<u8>, timeout: Duration) -> RemoteCall {
    RemoteCall {
        directory: "account".into(),
        key: key.into(),
        payload,
        timeout,
        hops: 0,
    }
}

/// An address on which nothing listens: bound, read, then closed.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_round_trips_every_field() {
    let recorder = Arc::new(Recorder::default());
    let server = start(recorder.clone()).await;
    let node = server.local_addr().to_string();
    let transport = HttpTransport::new().unwrap();

    // 1 MiB of every byte value, in a pattern that a shifted or truncated copy would break.
    let payload: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect();
    let sent = RemoteCall {
        directory: "bank account".into(),
        key: "Zoë's key / with spaces ✓ 🦀".into(),
        payload: payload.clone(),
        timeout: Duration::from_millis(4_321),
        hops: 3,
    };
    let answer = transport.call(&node, sent.clone()).await.unwrap();

    assert_eq!(answer, answer_for(&sent), "the answer's bytes differ");
    assert_eq!(recorder.calls(), vec![sent], "the server saw another call");
    let stats = server.stats();
    assert_eq!((stats.http2_calls, stats.other_calls), (1, 0));
    assert_eq!(stats.answered, 1);
    let client = transport.stats();
    assert_eq!((client.ok, client.unreachable, client.lost), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_multiplex_over_one_http2_connection() {
    const CALLS: usize = 500;
    // A little delay keeps many calls in flight at the same time.
    let recorder = Arc::new(Recorder::with_delay(Duration::from_millis(20)));
    let server = start(recorder.clone()).await;
    let node = server.local_addr().to_string();
    let transport = HttpTransport::new().unwrap();
    // One call first opens the connection: a cold burst may race hyper-util's pool into a
    // second connection; after that every call must reuse the one there is.
    let warm = call("warm-up", Vec::new(), Duration::from_secs(5));
    assert_eq!(
        transport.call(&node, warm.clone()).await.unwrap(),
        answer_for(&warm)
    );

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let transport = transport.clone();
        let node = node.clone();
        tasks.spawn(async move {
            let sent = call(
                &format!("key-{i}"),
                format!("payload {i}").into_bytes(),
                Duration::from_secs(20),
            );
            let answer = transport.call(&node, sent.clone()).await.unwrap();
            assert_eq!(answer, answer_for(&sent), "call {i} got another answer");
            i
        });
    }
    let mut done = Vec::new();
    while let Some(i) = tasks.join_next().await {
        done.push(i.unwrap());
    }
    done.sort_unstable();
    assert_eq!(done, (0..CALLS).collect::<Vec<_>>());

    let mut keys: Vec<String> = recorder
        .calls()
        .into_iter()
        .map(|c| c.key)
        .filter(|k| k != "warm-up")
        .collect();
    keys.sort();
    let mut expected: Vec<String> = (0..CALLS).map(|i| format!("key-{i}")).collect();
    expected.sort();
    assert_eq!(keys, expected, "each call delivered exactly once");

    let stats = server.stats();
    assert_eq!(
        stats.http2_calls,
        CALLS as u64 + 1,
        "not every call came over HTTP/2"
    );
    assert_eq!(stats.other_calls, 0);
    assert_eq!(stats.connections, 1, "calls did not share one connection");
    assert_eq!(transport.stats().ok, CALLS as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_closed_port_is_unreachable() {
    let node = closed_port().await;
    let transport = HttpTransport::new().unwrap();
    let err = transport
        .call(&node, call("k", b"x".to_vec(), Duration::from_secs(5)))
        .await
        .unwrap_err();
    match &err {
        TransportError::Unreachable { node: n, .. } => assert_eq!(n, &node),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let stats = transport.stats();
    assert_eq!((stats.ok, stats.unreachable, stats.lost), (0, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_timeout_is_unreachable() {
    // A listener that never accepts, with its accept queue filled: the kernel then drops
    // further SYNs, so a connect neither succeeds nor is refused, it times out.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let mut full = false;
    for _ in 0..64 {
        match tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "could not fill the accept queue");

    let transport = HttpTransport::with_config(
        &HttpTransportConfig::new().connect_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = transport
        .call(
            &addr.to_string(),
            call("k", b"x".to_vec(), Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, TransportError::Unreachable { .. }),
        "expected Unreachable, got {err:?}"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "not ended by the connect timeout: {took:?}"
    );
    drop((held, listener));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_later_than_the_timeout_is_lost_but_was_delivered() {
    let recorder = Arc::new(Recorder::with_delay(Duration::from_secs(3)));
    let server = start(recorder.clone()).await;
    let node = server.local_addr().to_string();
    let transport = HttpTransport::new().unwrap();

    let started = std::time::Instant::now();
    let err = transport
        .call(
            &node,
            call("slow", b"x".to_vec(), Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, TransportError::Lost { node: n, .. } if n == &node),
        "expected Lost, got {err:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "the call's timeout did not bound it: {took:?}"
    );
    let delivered = recorder.calls();
    assert_eq!(delivered.len(), 1, "the call was not delivered");
    assert_eq!(delivered[0].key, "slow");
    assert_eq!(delivered[0].timeout, Duration::from_millis(300));
    let stats = transport.stats();
    assert_eq!((stats.ok, stats.unreachable, stats.lost), (0, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_is_a_400_and_the_server_keeps_serving() {
    let recorder = Arc::new(Recorder::default());
    let server = start(recorder.clone()).await;
    let node = server.local_addr().to_string();
    let url = format!("http://{node}{CALL_PATH}");
    let raw = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();

    for body in [
        b"\xc1 is never valid msgpack".to_vec(),
        Vec::new(),
        // Valid MessagePack, wrong shape (a map without the call's fields).
        vec![0x81, 0xa1, b'x', 0x01],
    ] {
        let response = raw.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::BAD_REQUEST,
            "body {body:?}"
        );
        let text = response.text().await.unwrap();
        assert!(text.starts_with("malformed remote call"), "text: {text}");
    }
    assert!(
        recorder.calls().is_empty(),
        "a malformed call reached the handler"
    );
    assert_eq!(server.stats().malformed, 3);

    let transport = HttpTransport::new().unwrap();
    let sent = call("after", b"still here".to_vec(), Duration::from_secs(5));
    let answer = transport.call(&node, sent.clone()).await.unwrap();
    assert_eq!(answer, answer_for(&sent));
    assert_eq!(recorder.calls(), vec![sent]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_a_call_is_unreachable() {
    let recorder = Arc::new(Recorder::default());
    let server = start(recorder.clone()).await;
    let node = server.local_addr().to_string();
    let transport = HttpTransport::new().unwrap();

    // A connection is open and pooled before the shutdown.
    let sent = call("before", b"1".to_vec(), Duration::from_secs(5));
    assert_eq!(
        transport.call(&node, sent.clone()).await.unwrap(),
        answer_for(&sent)
    );

    server.shutdown().await;

    let err = transport
        .call(&node, call("after", b"2".to_vec(), Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Unreachable { .. }),
        "expected Unreachable, got {err:?}"
    );
    assert_eq!(recorder.calls().len(), 1, "a call reached a stopped server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_server_stops_listening() {
    let recorder = Arc::new(Recorder::default());
    let server = start(recorder.clone()).await;
    let node = server.local_addr().to_string();
    drop(server);
    // The accept loop is aborted; its listener is closed once the task has wound down.
    let transport = HttpTransport::new().unwrap();
    let mut last = None;
    for _ in 0..50 {
        match transport
            .call(&node, call("k", b"x".to_vec(), Duration::from_secs(2)))
            .await
        {
            Err(e @ TransportError::Unreachable { .. }) => {
                last = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(last.is_some(), "the dropped server still accepts calls");
}

/// What a caller of an executor learns from the transport when a call forwarded over HTTP/2
/// fails: whether it may have been carried out on the owner ([`ExecutorError::not_delivered`],
/// [`ExecutorError::answer_lost`], [`ExecutorError::owner_answered`]).
///
/// [`ExecutorError::not_delivered`]: aggregate_actors::ExecutorError::not_delivered
/// [`ExecutorError::answer_lost`]: aggregate_actors::ExecutorError::answer_lost
/// [`ExecutorError::owner_answered`]: aggregate_actors::ExecutorError::owner_answered
mod through_an_executor {
    use crate::common::Tally;
    use std::sync::Arc;
    use std::time::Duration;

    use actor_runtime::{Inbound, Location, RemoteCall, async_trait};
    use aggregate_actors::event_stores::{
        EventStore, InMemoryEventStore, InMemorySnapshotStore, ReadQuery, SnapshotStore, StreamId,
    };
    use aggregate_actors::{
        AggregateSettings, CommandError, CommandOptions, Executor, ExecutorError, Placement,
        RuntimeConfig,
    };
    use cluster::{HttpTransport, HttpTransportConfig, TransportServer, serve};
    use tokio::net::TcpListener;

    /// Every id is served by the node at `owner` (`None`: here).
    struct Everything {
        owner: Option<String>,
    }

    impl Placement<String> for Everything {
        fn is_local(&self, _: &String) -> bool {
            self.owner.is_none()
        }

        fn locate(&self, _: &String) -> Location {
            match &self.owner {
                None => Location::Local,
                Some(address) => Location::Remote(address.clone()),
            }
        }
    }

    /// The owner's answering side, answering only after `delay` (the call runs at once).
    struct Late {
        inbound: Arc<dyn Inbound>,
        delay: Duration,
    }

    #[async_trait]
    impl Inbound for Late {
        async fn handle(&self, call: RemoteCall) -> Vec<u8> {
            let answer = self.inbound.handle(call).await;
            tokio::time::sleep(self.delay).await;
            answer
        }
    }

    fn executor(events: &Arc<dyn EventStore>, owner: Option<String>) -> Executor {
        let snapshots: Arc<dyn SnapshotStore> = Arc::new(InMemorySnapshotStore::new());
        let transport = HttpTransport::with_config(
            &HttpTransportConfig::new().connect_timeout(Duration::from_millis(300)),
        )
        .unwrap();
        let owner = Arc::new(owner);
        Executor::builder(Arc::clone(events), snapshots)
            .placement(Arc::new(move |_| {
                Arc::new(Everything {
                    owner: (*owner).clone(),
                })
            }))
            .transport(Arc::new(transport))
            .register_remote::<Tally>(AggregateSettings::new().runtime(RuntimeConfig {
                call_timeout: Duration::from_millis(400),
                ..RuntimeConfig::default()
            }))
            .build()
            .unwrap()
    }

    /// An owner served over HTTP/2 that answers `delay` late, and a caller that forwards
    /// everything to it.
    struct Pair {
        caller: Executor,
        owner: Executor,
        events: Arc<dyn EventStore>,
        _server: TransportServer,
    }

    async fn pair(delay: Duration) -> Pair {
        let events: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        let owner = executor(&events, None);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = serve(
            listener,
            Arc::new(Late {
                inbound: owner.inbound(),
                delay,
            }),
        );
        let caller = executor(&events, Some(server.local_addr().to_string()));
        Pair {
            caller,
            owner,
            events,
            _server: server,
        }
    }

    async fn stored(events: &dyn EventStore, id: &str) -> usize {
        let stream = StreamId::new("tally", id).unwrap();
        events
            .read_stream(&stream, ReadQuery::all())
            .await
            .unwrap()
            .len()
    }

    fn short() -> CommandOptions {
        CommandOptions::new().timeout(Duration::from_millis(400))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_for_an_owner_that_cannot_be_connected_to_was_not_delivered() {
        let events: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        let caller = executor(&events, Some(super::closed_port().await));
        match caller.execute_with::<Tally>("t-1", 1, short()).await {
            Err(CommandError::NotStored(error)) => {
                assert!(error.not_delivered(), "{error}");
                assert!(!error.answer_lost() && !error.owner_answered());
                assert!(error.is_retryable());
            }
            other => panic!("expected not stored, got {other:?}"),
        }
        match caller.snapshot_now::<Tally>("t-1").await {
            Err(error) => assert!(error.not_delivered(), "{error}"),
            Ok(version) => panic!("snapshotted at {version}"),
        }
        assert_eq!(stored(&*events, "t-1").await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_whose_answer_comes_after_the_deadline_may_have_arrived_and_did() {
        let p = pair(Duration::from_secs(2)).await;
        match p.caller.execute_with::<Tally>("t-1", 1, short()).await {
            Err(CommandError::Indeterminate(i)) => {
                assert!(i.cause.answer_lost(), "{i}");
                assert!(!i.cause.not_delivered() && !i.cause.owner_answered());
            }
            other => panic!("expected indeterminate, got {other:?}"),
        }
        // It had arrived: the owner carried it out.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while stored(&*p.events, "t-1").await == 0 {
            assert!(std::time::Instant::now() < deadline, "never carried out");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A snapshot request that loses its answer the same way may have been carried out.
        match p.caller.snapshot_now::<Tally>("t-1").await {
            Err(error) => {
                assert!(error.answer_lost(), "{error}");
            }
            Ok(version) => panic!("snapshotted at {version}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_the_owner_answered_with_was_delivered() {
        let p = pair(Duration::ZERO).await;
        p.caller
            .execute_with::<Tally>("t-1", 1, short())
            .await
            .unwrap();
        p.owner.shutdown().await;
        match p.caller.execute_with::<Tally>("t-1", 1, short()).await {
            Err(CommandError::NotStored(error)) => {
                assert!(error.owner_answered(), "{error}");
                assert!(!error.answer_lost() && !error.not_delivered());
                assert!(
                    matches!(&error, ExecutorError::Remote { kind, .. } if kind == "shutting_down"),
                    "{error}"
                );
            }
            other => panic!("expected not stored, got {other:?}"),
        }
        match p.caller.snapshot_now::<Tally>("t-1").await {
            Err(error) => assert!(error.owner_answered(), "{error}"),
            Ok(version) => panic!("snapshotted at {version}"),
        }
        assert_eq!(stored(&*p.events, "t-1").await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_of_the_calling_node_is_none_of_not_delivered_lost_or_answered() {
        let events: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        let local = executor(&events, None);
        let error = local.snapshot_now::<Tally>("t-missing").await.unwrap_err();
        assert!(matches!(error, ExecutorError::NotFound { .. }), "{error}");
        assert!(!error.not_delivered() && !error.answer_lost() && !error.owner_answered());
    }
}
