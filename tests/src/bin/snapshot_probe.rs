//! Runs one snapshot-reading step in a process of its own, so a test can see whether hostile
//! input makes it crash (abort, stack overflow) rather than fail with an error: a crash of the
//! test process itself would take every other test down with it and report nothing useful.
//!
//! ```text
//! snapshot_probe unseal <none|zstd> <recorded uncompressed size>
//!     seals a real wallet state, unseals it with the given recorded size, decodes it;
//!     prints "accepted <n> bytes" or "refused: <error>"
//! snapshot_probe activate <database url> <wallet id>
//!     reads the wallet's state through a fresh executor (snapshots first);
//!     prints "state version=<v> from=<snapshot version> skipped=<n>" or "error: <error>"
//! ```
//!
//! Exits 0 whatever the outcome, as long as the process survives.

use std::error::Error;
use std::sync::Arc;

use aggregate_actors::codec::{self, CODEC_MSGPACK, CompressionConfig};
use aggregate_actors::event_stores::{PgConfig, PgEventStore, PgSnapshotStore};
use integration_tests::reading_executor;
use integration_tests::wallet::{Wallet, WalletState};

fn unseal(compression: &str, size: u64) -> Result<(), Box<dyn Error>> {
    let state = WalletState {
        balance: 42,
        memos: vec!["a memo".repeat(50); 20],
        ..WalletState::default()
    };
    let threshold = if compression == "zstd" { 0 } else { usize::MAX };
    let sealed = codec::seal(
        codec::encode(&state)?,
        &CompressionConfig {
            threshold_bytes: threshold,
            algorithm: codec::SnapshotCompression::Zstd { level: 1 },
            ..CompressionConfig::default()
        },
    )?;
    match codec::unseal(
        &sealed.bytes,
        CODEC_MSGPACK,
        sealed.compression,
        sealed.checksum,
        size,
    )
    .and_then(|encoded| codec::decode::<WalletState>(&encoded).map(|_| encoded.len()))
    {
        Ok(len) => println!("accepted {len} bytes"),
        Err(error) => println!("refused: {error}"),
    }
    Ok(())
}

async fn activate(url: &str, id: &str) -> Result<(), Box<dyn Error>> {
    let config = PgConfig::new(url).max_connections(2);
    let events = PgEventStore::connect(&config).await?;
    let snapshots = PgSnapshotStore::with_migrated_pool(events.pool().clone(), config.limits)
        .with_client_timeout(config.client_timeout());
    let executor = reading_executor(Arc::new(events), Arc::new(snapshots));
    match executor.state::<Wallet>(id).await {
        Ok(view) => println!(
            "state version={} from={} skipped={}",
            view.version,
            view.activation
                .snapshot_version()
                .map_or("none".to_owned(), |v| v.to_string()),
            view.activation.snapshots_skipped
        ),
        Err(error) => println!("error: {error}"),
    }
    executor.shutdown().await;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["unseal", compression, size] => unseal(compression, size.parse()?),
        ["activate", url, id] => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(activate(url, id)),
        _ => Err("usage: snapshot_probe unseal <none|zstd> <size> | activate <url> <id>".into()),
    }
}
