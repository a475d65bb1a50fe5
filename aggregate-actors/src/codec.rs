//! Encoding of events and snapshots.
//!
//! Events and state are MessagePack with named fields (rmp-serde's `to_vec_named`): compact,
//! fast, and tolerant of added fields, unlike positional MessagePack. Snapshots are compressed
//! above a size threshold (small states gain little and pay the frame header) with the
//! algorithm chosen per aggregate type (zstd by default, or lz4, or none: [`compression`]), or
//! written as deltas against an earlier full snapshot ([`delta`]), and carry an xxh3-64
//! checksum over the stored bytes: xxh3 is several times faster than CRC32 on large buffers and
//! a 64-bit sum makes an undetected corruption vanishingly unlikely.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use event_stores::{EventMetadata, NewEvent, StreamId, command_event_id};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::dedup::RecentCommand;

pub mod compression;
pub mod delta;

pub use compression::{
    CompressionConfig, DEFAULT_ZSTD_LEVEL, InvalidCompression, SnapshotCompression,
};
pub use delta::{delta_number, seal_delta, unseal_delta};

/// Name recorded for snapshots whose bytes are the MessagePack state alone (written before
/// snapshots carried the recent command ids; still read).
pub const CODEC_MSGPACK: &str = "msgpack";
/// Name recorded for snapshots whose bytes are MessagePack of `{ state, commands }`: the state
/// and the aggregate's window of recent command ids (see [`DedupWindow`](crate::DedupWindow)).
pub const CODEC_MSGPACK_WITH_COMMANDS: &str = "msgpack+commands";
/// Name recorded for uncompressed snapshots.
pub const COMPRESSION_NONE: &str = "none";
/// Name recorded for zstd-compressed snapshots.
pub const COMPRESSION_ZSTD: &str = "zstd";
/// Name recorded for lz4-compressed snapshots (LZ4 block format).
pub const COMPRESSION_LZ4: &str = "lz4";
/// Name recorded for delta snapshots: zstd against the base snapshot's encoded bytes (see
/// [`delta`]).
pub const COMPRESSION_ZSTD_DELTA: &str = "zstd-delta";

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Serialization failed (a type serde cannot represent as MessagePack).
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// The stored bytes do not match their checksum.
    #[error("checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    Checksum {
        /// Checksum recorded with the snapshot.
        stored: u64,
        /// Checksum of the bytes as read.
        computed: u64,
    },
    /// The compression or codec name is not one this build knows.
    #[error("unknown {what} {name:?}")]
    Unknown {
        /// "codec" or "compression".
        what: &'static str,
        /// The recorded name.
        name: String,
    },
    /// Decompression failed or produced another size than recorded.
    #[error("decompression failed: {0}")]
    Decompress(String),
    /// A delta snapshot was opened without its base (see [`unseal_delta`]).
    #[error("a delta snapshot cannot be read without its base")]
    NeedsBase,
}

/// Encodes a value as MessagePack with named fields.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes MessagePack bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string()))
}

#[derive(Serialize)]
struct SnapshotBodyRef<'a, S> {
    state: &'a S,
    commands: &'a [RecentCommand],
}

#[derive(serde::Deserialize)]
struct SnapshotBody<S> {
    state: S,
    #[serde(default)]
    commands: Vec<RecentCommand>,
}

/// Encodes a snapshot body (codec [`CODEC_MSGPACK_WITH_COMMANDS`]).
pub(crate) fn encode_snapshot<S: Serialize>(
    state: &S,
    commands: &[RecentCommand],
) -> Result<Vec<u8>, CodecError> {
    encode(&SnapshotBodyRef { state, commands })
}

/// [`encode_snapshot`] from a state already encoded with [`encode`]: the same bytes, without
/// encoding the state again. MessagePack is compositional, so a body is its two-entry map's
/// header, each key, and each value's own encoding in turn.
pub(crate) fn encode_snapshot_from_parts(
    state: &[u8],
    commands: &[RecentCommand],
) -> Result<Vec<u8>, CodecError> {
    let encode_error = |e: rmp::encode::ValueWriteError| CodecError::Encode(e.to_string());
    let mut body = Vec::with_capacity(state.len() + 32 + commands.len() * 72);
    rmp::encode::write_map_len(&mut body, 2).map_err(encode_error)?;
    rmp::encode::write_str(&mut body, "state").map_err(encode_error)?;
    body.extend_from_slice(state);
    rmp::encode::write_str(&mut body, "commands").map_err(encode_error)?;
    rmp_serde::encode::write_named(&mut body, commands)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(body)
}

/// Decodes unsealed snapshot bytes written with `codec` into the state and the recent commands
/// it carries (none for [`CODEC_MSGPACK`]).
pub(crate) fn decode_snapshot_body<S: DeserializeOwned>(
    codec: &str,
    encoded: &[u8],
) -> Result<(S, Vec<RecentCommand>), CodecError> {
    if codec == CODEC_MSGPACK {
        return decode(encoded).map(|state| (state, Vec::new()));
    }
    let body: SnapshotBody<S> = decode(encoded)?;
    Ok((body.state, body.commands))
}

/// Decodes unsealed snapshot bytes (from [`unseal`]) written with `codec` into the state.
pub fn decode_snapshot<S: DeserializeOwned>(codec: &str, encoded: &[u8]) -> Result<S, CodecError> {
    decode_snapshot_body(codec, encoded).map(|(state, _)| state)
}

/// The checksum stored with snapshots: xxh3-64 over the stored bytes.
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Snapshot bytes ready to store, with what was done to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSnapshot {
    /// The bytes to store.
    pub bytes: Bytes,
    /// The compression name to record: `"none"`, `"zstd"`, `"lz4"` or `"zstd-delta"`.
    pub compression: &'static str,
    /// xxh3-64 of `bytes`.
    pub checksum: u64,
    /// Size of the encoded state before compression.
    pub uncompressed_size: u64,
}

/// Compresses (above the threshold, with the configured algorithm) and checksums an encoded
/// state as a full snapshot.
pub fn seal(encoded: Vec<u8>, config: &CompressionConfig) -> Result<SealedSnapshot, CodecError> {
    let uncompressed_size = encoded.len() as u64;
    let (bytes, compression) = if encoded.len() >= config.threshold_bytes {
        compression::compress(encoded, config.algorithm)?
    } else {
        (encoded, COMPRESSION_NONE)
    };
    Ok(SealedSnapshot {
        checksum: checksum(&bytes),
        bytes: Bytes::from(bytes),
        compression,
        uncompressed_size,
    })
}

/// Checks the checksum and codec of a stored full snapshot and returns the encoded state. A
/// delta ([`COMPRESSION_ZSTD_DELTA`]) needs its base: [`unseal_delta`].
pub fn unseal(
    bytes: &[u8],
    codec: &str,
    compression: &str,
    stored_checksum: u64,
    uncompressed_size: u64,
) -> Result<Vec<u8>, CodecError> {
    check_stored(bytes, codec, stored_checksum)?;
    if compression == COMPRESSION_ZSTD_DELTA {
        return Err(CodecError::NeedsBase);
    }
    let encoded = compression::decompress(compression, bytes, uncompressed_size)?;
    check_size(encoded, uncompressed_size)
}

/// The checks every stored snapshot meets before it is decompressed: its bytes have the
/// recorded checksum, and its codec is one this build reads.
fn check_stored(bytes: &[u8], codec: &str, stored_checksum: u64) -> Result<(), CodecError> {
    let computed = checksum(bytes);
    if computed != stored_checksum {
        return Err(CodecError::Checksum {
            stored: stored_checksum,
            computed,
        });
    }
    if codec != CODEC_MSGPACK && codec != CODEC_MSGPACK_WITH_COMMANDS {
        return Err(CodecError::Unknown {
            what: "codec",
            name: codec.to_owned(),
        });
    }
    Ok(())
}

/// The decompressed bytes, when they are as many as recorded.
fn check_size(encoded: Vec<u8>, uncompressed_size: u64) -> Result<Vec<u8>, CodecError> {
    if encoded.len() as u64 != uncompressed_size {
        return Err(CodecError::Decompress(format!(
            "expected {uncompressed_size} bytes, got {}",
            encoded.len()
        )));
    }
    Ok(encoded)
}

/// Encodes a command's events for the store, with ids derived from the command id (so a retry
/// of the command collides with its first attempt in the store).
pub(crate) fn encode_events<A: Aggregate>(
    stream: &StreamId,
    command_id: Uuid,
    events: &[A::Event],
    metadata: EventMetadata,
) -> Result<Vec<NewEvent>, CodecError> {
    let mut encoded = Vec::with_capacity(events.len());
    for (index, event) in (0u32..).zip(events) {
        // Built whole rather than with `NewEvent::new`, which would draw a UUID v7 (a clock
        // read and a shared generator) only for `for_command` to replace it.
        encoded.push(NewEvent {
            event_id: command_event_id(stream, command_id, index),
            command_id: Some(command_id),
            event_type: A::event_type(event).into_owned(),
            schema_version: A::EVENT_SCHEMA_VERSION,
            payload: encode_payload(event)?,
            metadata,
        });
    }
    Ok(encoded)
}

thread_local! {
    /// Scratch space for encodings that are copied out at their exact size (event payloads,
    /// resident states): one allocation each, instead of growing a fresh vector several times
    /// and then shrinking or wrapping it in a second allocation.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Scratch buffers larger than this are not kept for the next encoding.
const SCRATCH_KEEP: usize = 64 * 1024;

/// [`encode`] into the thread's scratch buffer, then `copy_out` of the encoded bytes.
pub(crate) fn encode_in_scratch<T: Serialize + ?Sized, R>(
    value: &T,
    copy_out: impl Fn(&[u8]) -> R,
) -> Result<R, CodecError> {
    let encode_into = |buffer: &mut Vec<u8>| {
        buffer.clear();
        rmp_serde::encode::write_named(buffer, value)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(copy_out(buffer))
    };
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buffer) => {
            let encoded = encode_into(&mut buffer);
            if buffer.capacity() > SCRATCH_KEEP {
                *buffer = Vec::new();
            }
            encoded
        }
        // Re-entered (a `Serialize` impl encoding values of its own): a buffer of its own.
        Err(_) => encode_into(&mut Vec::new()),
    })
}

/// [`encode`] as exact-size [`Bytes`]: the same bytes.
fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
    encode_in_scratch(value, |bytes: &[u8]| Bytes::copy_from_slice(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, Serialize)]
    struct SampleState {
        balance: i64,
        note: Option<String>,
        history: Vec<(u64, String)>,
    }

    proptest::proptest! {
        #[test]
        fn a_body_from_an_encoded_state_is_byte_for_byte_the_body_of_the_state(
            balance in proptest::prelude::any::<i64>(),
            note in proptest::option::of("[a-zé]{0,40}"),
            history in proptest::collection::vec((0u64..u64::MAX, "[a-z]{0,300}"), 0..20),
            commands in proptest::collection::vec(
                (proptest::prelude::any::<u128>(), 0u64..1 << 40, 0u64..64, proptest::prelude::any::<i64>()),
                0..130,
            ),
        ) {
            let state = SampleState { balance, note, history };
            let commands: Vec<RecentCommand> = commands
                .into_iter()
                .map(|(id, first_version, extra, recorded_at)| RecentCommand {
                    id: Uuid::from_u128(id),
                    first_version,
                    last_version: first_version + extra,
                    recorded_at,
                })
                .collect();
            let whole = encode_snapshot(&state, &commands).unwrap();
            let from_parts = encode_snapshot_from_parts(&encode(&state).unwrap(), &commands).unwrap();
            proptest::prop_assert_eq!(whole, from_parts);
        }
    }

    #[test]
    fn payloads_and_resident_states_are_the_named_messagepack_encoding() {
        #[derive(Serialize)]
        struct Deposited {
            amount: u64,
            note: String,
        }
        for size in [0, 10, 1_000, 2 * SCRATCH_KEEP] {
            let event = Deposited {
                amount: 7,
                note: "n".repeat(size),
            };
            assert_eq!(encode_payload(&event).unwrap(), encode(&event).unwrap());
            let boxed = encode_in_scratch(&event, |bytes: &[u8]| Box::<[u8]>::from(bytes));
            assert_eq!(*boxed.unwrap(), *encode(&event).unwrap());
        }
    }

    fn config(threshold: usize) -> CompressionConfig {
        CompressionConfig {
            threshold_bytes: threshold,
            ..CompressionConfig::default()
        }
    }

    #[test]
    fn small_states_are_stored_uncompressed_and_round_trip() {
        let encoded = encode(&vec![1u32, 2, 3]).unwrap();
        let sealed = seal(encoded.clone(), &config(1024)).unwrap();
        assert_eq!(sealed.compression, COMPRESSION_NONE);
        let back = unseal(
            &sealed.bytes,
            CODEC_MSGPACK,
            sealed.compression,
            sealed.checksum,
            sealed.uncompressed_size,
        )
        .unwrap();
        assert_eq!(back, encoded);
    }

    #[test]
    fn large_states_are_compressed_and_round_trip() {
        let value: Vec<String> = (0..2_000).map(|i| format!("entry-{}", i % 10)).collect();
        let encoded = encode(&value).unwrap();
        let sealed = seal(encoded.clone(), &config(1024)).unwrap();
        assert_eq!(sealed.compression, COMPRESSION_ZSTD);
        assert!(sealed.bytes.len() < encoded.len() / 4);
        let back = unseal(
            &sealed.bytes,
            CODEC_MSGPACK,
            sealed.compression,
            sealed.checksum,
            sealed.uncompressed_size,
        )
        .unwrap();
        assert_eq!(decode::<Vec<String>>(&back).unwrap(), value);
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let sealed = seal(encode(&"hello").unwrap(), &config(1024)).unwrap();
        let mut bytes = sealed.bytes.to_vec();
        bytes[0] ^= 0x01;
        let err = unseal(
            &bytes,
            CODEC_MSGPACK,
            sealed.compression,
            sealed.checksum,
            sealed.uncompressed_size,
        )
        .unwrap_err();
        assert!(matches!(err, CodecError::Checksum { .. }));
    }

    #[test]
    fn a_lying_recorded_size_is_refused_without_allocating_it() {
        let value: Vec<u64> = (0..5_000).collect();
        let sealed = seal(encode(&value).unwrap(), &config(0)).unwrap();
        for lie in [
            0,
            sealed.uncompressed_size - 1,
            sealed.uncompressed_size + 1,
            1 << 40,
            i64::MAX as u64,
            u64::MAX,
        ] {
            let err = unseal(
                &sealed.bytes,
                CODEC_MSGPACK,
                sealed.compression,
                sealed.checksum,
                lie,
            )
            .unwrap_err();
            assert!(
                matches!(err, CodecError::Decompress(_)),
                "size {lie}: {err}"
            );
        }
    }

    #[test]
    fn unknown_codec_and_compression_are_refused() {
        let sealed = seal(encode(&1u8).unwrap(), &config(1024)).unwrap();
        assert!(matches!(
            unseal(
                &sealed.bytes,
                "json",
                sealed.compression,
                sealed.checksum,
                sealed.uncompressed_size
            ),
            Err(CodecError::Unknown { what: "codec", .. })
        ));
        assert!(matches!(
            unseal(
                &sealed.bytes,
                CODEC_MSGPACK,
                "brotli",
                sealed.checksum,
                sealed.uncompressed_size
            ),
            Err(CodecError::Unknown {
                what: "compression",
                ..
            })
        ));
    }
}
