//! Incremental snapshots in the writer: which full snapshot a delta is written against, the
//! sealing, and the check of what the store kept.
//!
//! The base is always the newest full snapshot of the chain the previous snapshot belongs to,
//! read back from the store and verified (its checksum, and that it opens) before it is used:
//! a delta written against a damaged base would be unreadable. Nothing is cached between
//! writes, so memory does not grow with the number of aggregates; the cost is one or two
//! point reads per delta, off the command path. The chain's length comes from the newest
//! delta's header ([`codec::delta_number`]), because retention may have deleted older deltas
//! of the chain, so counting the kept ones would undercount.

use event_stores::{SnapshotBase, SnapshotRecord, SnapshotStore, StreamId};

use crate::codec::{self, CodecError, CompressionConfig, SealedSnapshot};
use crate::hydrate::open_base;

/// A verified-to-exist full snapshot to write the next snapshot against.
pub(super) struct BaseChoice {
    record: SnapshotRecord,
    /// The number the new delta gets in the chain.
    number: u32,
}

/// The base of a delta: how the record names it, and its encoded bytes (the dictionary).
pub(super) struct DeltaBase {
    pub(super) reference: SnapshotBase,
    pub(super) encoded: Vec<u8>,
}

/// A sealed snapshot, and its base when it is a delta.
pub(super) struct Sealed {
    pub(super) snapshot: SealedSnapshot,
    pub(super) base: Option<DeltaBase>,
}

/// The full snapshot to write the snapshot at `version` of `stream` against, or `None` when
/// it is to be full: incremental snapshots off, no earlier snapshot, the chain already holds
/// `max_deltas` deltas, or the base is gone or no longer the one the chain names.
pub(super) async fn choose_base(
    store: &dyn SnapshotStore,
    stream: &StreamId,
    version: u64,
    max_deltas: u32,
) -> Option<BaseChoice> {
    if max_deltas == 0 || version <= 1 {
        return None;
    }
    // Strictly older: a snapshot at `version` itself is about to be replaced.
    let previous = load(store, stream, version - 1).await?;
    let Some(named) = previous.base else {
        return Some(BaseChoice {
            record: previous,
            number: 1,
        });
    };
    // The chain's length is in the newest delta's header: trusted only when intact.
    if codec::checksum(&previous.bytes) != previous.checksum {
        return None;
    }
    let written = codec::delta_number(&previous.bytes)?;
    if written >= max_deltas {
        return None;
    }
    let base = load(store, stream, named.version).await?;
    (base.version == named.version && base.checksum == named.checksum).then_some(BaseChoice {
        record: base,
        number: written.saturating_add(1),
    })
}

async fn load(store: &dyn SnapshotStore, stream: &StreamId, at: u64) -> Option<SnapshotRecord> {
    match store.load_at_or_before_version(stream, at).await {
        Ok(record) => record,
        Err(error) => {
            tracing::debug!(%stream, %error, "no base for a delta snapshot; writing it in full");
            None
        }
    }
}

/// Seals `encoded` as a delta against `base` when the base opens, otherwise in full. CPU work:
/// the caller runs it on the blocking pool for large states.
pub(super) fn seal(
    encoded: Vec<u8>,
    config: &CompressionConfig,
    base: Option<BaseChoice>,
) -> Result<Sealed, CodecError> {
    let base = base.and_then(|choice| {
        let BaseChoice { record, number } = choice;
        match open_base(&record) {
            Ok(encoded) => Some((
                DeltaBase {
                    reference: SnapshotBase {
                        version: record.version,
                        checksum: record.checksum,
                    },
                    encoded,
                },
                number,
            )),
            Err(error) => {
                tracing::warn!(stream = %record.stream, version = record.version, %error, "base snapshot invalid; writing a full snapshot");
                None
            }
        }
    });
    match base {
        Some((base, number)) => Ok(Sealed {
            snapshot: codec::seal_delta(&encoded, &base.encoded, number, config.delta_level())?,
            base: Some(base),
        }),
        None => Ok(Sealed {
            snapshot: codec::seal(encoded, config)?,
            base: None,
        }),
    }
}

/// Checks a delta as the store returned it: it still names `base`, and it opens against the
/// base's bytes into a state that `verify` (the full-snapshot check of the aggregate type)
/// accepts.
pub(super) fn verify_delta(
    stored: &SnapshotRecord,
    base: &DeltaBase,
    verify: fn(&SnapshotRecord) -> Result<(), String>,
) -> Result<(), String> {
    if stored.base != Some(base.reference) {
        return Err(format!(
            "the store returned base {:?} for a delta written against {:?}",
            stored.base, base.reference
        ));
    }
    if stored.stored_size != stored.bytes.len() as u64 {
        return Err(format!(
            "recorded stored size {} but {} bytes are stored",
            stored.stored_size,
            stored.bytes.len()
        ));
    }
    let encoded = codec::unseal_delta(
        &stored.bytes,
        &stored.codec,
        stored.checksum,
        stored.uncompressed_size,
        &base.encoded,
    )
    .map_err(|error| error.to_string())?;
    let size = encoded.len() as u64;
    verify(&SnapshotRecord {
        compression: codec::COMPRESSION_NONE.to_owned(),
        checksum: codec::checksum(&encoded),
        uncompressed_size: size,
        stored_size: size,
        bytes: encoded.into(),
        base: None,
        ..stored.clone()
    })
}
