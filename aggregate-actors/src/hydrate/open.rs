//! Opening a snapshot record: every check that needs no event, then decompression and
//! decoding. A full snapshot opens alone; a delta needs its base, loaded from the snapshot
//! store by version and trusted only if it is the very snapshot the delta was written against
//! (same checksum), is itself a full snapshot and opens. Anything else makes the delta invalid,
//! and activation goes on to older snapshots as for any invalid snapshot.

use event_stores::{SnapshotBase, SnapshotRecord, SnapshotStore, StreamId};

use crate::aggregate::Aggregate;
use crate::codec;
use crate::dedup::RecentCommand;

/// A snapshot that passed every check needing no event, with the state it holds.
pub(super) struct Opened<A: Aggregate> {
    pub(super) record: SnapshotRecord,
    pub(super) state: A::State,
    pub(super) commands: Vec<RecentCommand>,
}

/// Opens `record` for activation, loading its base from `snapshots` if it is a delta.
pub(super) async fn open_record<A: Aggregate>(
    snapshots: &dyn SnapshotStore,
    record: SnapshotRecord,
) -> Result<Opened<A>, String> {
    let base = match record.base {
        Some(named) => Some(load_base(snapshots, &record.stream, named).await?),
        None => None,
    };
    let (state, commands) = open_snapshot_on::<A>(&record, base.as_deref())?;
    Ok(Opened {
        record,
        state,
        commands,
    })
}

/// The encoded bytes of the base `named` by a delta of `stream`, or why it cannot serve.
async fn load_base(
    snapshots: &dyn SnapshotStore,
    stream: &StreamId,
    named: SnapshotBase,
) -> Result<Vec<u8>, String> {
    let version = named.version;
    let base = snapshots
        .load_at_or_before_version(stream, version)
        .await
        .map_err(|error| format!("its base snapshot at version {version} cannot be read: {error}"))?
        .filter(|base| base.version == version)
        .ok_or_else(|| format!("its base snapshot at version {version} is missing"))?;
    if base.checksum != named.checksum {
        return Err(format!(
            "its base snapshot at version {version} has checksum {:#018x}, not {:#018x} as \
             when the delta was written",
            base.checksum, named.checksum
        ));
    }
    open_base(&base).map_err(|error| format!("its base snapshot at version {version}: {error}"))
}

/// The encoded bytes of a full snapshot used as a delta's base, after every check of its
/// bytes. Its state is not decoded: to the delta it is a dictionary of bytes.
pub(crate) fn open_base(record: &SnapshotRecord) -> Result<Vec<u8>, String> {
    if record.base.is_some() {
        return Err("it is itself a delta".into());
    }
    check_stored_size(record)?;
    codec::unseal(
        &record.bytes,
        &record.codec,
        &record.compression,
        record.checksum,
        record.uncompressed_size,
    )
    .map_err(|error| error.to_string())
}

/// Every check of a full snapshot record that needs no event: state schema version, stored
/// size, checksum, codec, decompression and decoding. Returns the state and the recent commands
/// it carries, or why it is invalid (a delta is invalid here: it needs its base, see
/// [`open_record`]). Activation also checks `last_event_id` against the stream; the snapshot
/// writer runs this on what it just stored before retention deletes anything.
pub(crate) fn open_snapshot<A: Aggregate>(
    record: &SnapshotRecord,
) -> Result<(A::State, Vec<RecentCommand>), String> {
    open_snapshot_on::<A>(record, None)
}

/// [`open_snapshot`] for a full record (`base` `None`) or a delta with its base's bytes.
fn open_snapshot_on<A: Aggregate>(
    record: &SnapshotRecord,
    base: Option<&[u8]>,
) -> Result<(A::State, Vec<RecentCommand>), String> {
    if record.state_schema_version != A::STATE_SCHEMA_VERSION {
        return Err(format!(
            "state schema version {} (expected {})",
            record.state_schema_version,
            A::STATE_SCHEMA_VERSION
        ));
    }
    check_stored_size(record)?;
    let encoded = match (record.base, base) {
        (None, _) => codec::unseal(
            &record.bytes,
            &record.codec,
            &record.compression,
            record.checksum,
            record.uncompressed_size,
        ),
        (Some(_), Some(base)) if record.compression == codec::COMPRESSION_ZSTD_DELTA => {
            codec::unseal_delta(
                &record.bytes,
                &record.codec,
                record.checksum,
                record.uncompressed_size,
                base,
            )
        }
        (Some(_), Some(_)) => {
            return Err(format!(
                "it names a base but its compression is {:?}",
                record.compression
            ));
        }
        (Some(_), None) => Err(codec::CodecError::NeedsBase),
    };
    encoded
        .and_then(|encoded| codec::decode_snapshot_body::<A::State>(&record.codec, &encoded))
        .map_err(|error| error.to_string())
}

fn check_stored_size(record: &SnapshotRecord) -> Result<(), String> {
    if record.stored_size == record.bytes.len() as u64 {
        Ok(())
    } else {
        Err(format!(
            "recorded stored size {} but {} bytes are stored",
            record.stored_size,
            record.bytes.len()
        ))
    }
}
