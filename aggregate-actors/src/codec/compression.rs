//! The compression applied to a full snapshot after encoding, chosen per aggregate type and
//! recorded per snapshot (the record's `compression` field), so snapshots written under one
//! setting still read back after it changes and any mix of them reads back.
//!
//! - **zstd** (the default, level 3): the best ratio, at a speed that is rarely the bottleneck
//!   of a background write. The level is configurable; out-of-range levels are refused when
//!   the executor is built, not clamped.
//! - **lz4** ([`lz4_flex`], block format): several times faster to compress and decompress
//!   than zstd at a worse ratio, for large states that are snapshotted often. `lz4_flex` is pure
//!   Rust (no C build beside zstd's) and its block API is all this needs. LZ4 has no levels.
//! - **none**: the encoded bytes as they are.
//!
//! Whatever the choice, states smaller than [`CompressionConfig::threshold_bytes`] are stored
//! uncompressed: they gain little and would pay the frame overhead. Incremental snapshots
//! ([`CompressionConfig::max_deltas`]) are a form of compression against an earlier snapshot
//! and always use zstd (see [`super::delta`]).

use super::{COMPRESSION_LZ4, COMPRESSION_NONE, COMPRESSION_ZSTD, CodecError};

/// The zstd level used when none is given (zstd's own default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Largest factor by which LZ4 can expand data: a literal-free sequence of 255-byte length
/// extensions. A recorded size beyond `stored * LZ4_MAX_RATIO` cannot be true.
const LZ4_MAX_RATIO: u64 = 255;

/// The compression algorithm of full snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotCompression {
    /// Stored as encoded.
    None,
    /// zstd at `level` (1 = fastest of the normal levels, up to 22; negative levels are
    /// zstd's faster-still modes). Valid levels: [`zstd::compression_level_range`].
    Zstd {
        /// The zstd compression level.
        level: i32,
    },
    /// LZ4 block format ([`lz4_flex`]). LZ4 has no compression level.
    Lz4,
}

impl Default for SnapshotCompression {
    fn default() -> Self {
        Self::Zstd {
            level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

impl SnapshotCompression {
    /// The name recorded with snapshots compressed this way.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => COMPRESSION_NONE,
            Self::Zstd { .. } => COMPRESSION_ZSTD,
            Self::Lz4 => COMPRESSION_LZ4,
        }
    }

    /// Checks the setting; a zstd level outside zstd's range is refused.
    pub fn validate(&self) -> Result<(), InvalidCompression> {
        match *self {
            Self::Zstd { level } => {
                let range = zstd::compression_level_range();
                if range.contains(&level) {
                    Ok(())
                } else {
                    Err(InvalidCompression::ZstdLevel {
                        level,
                        min: *range.start(),
                        max: *range.end(),
                    })
                }
            }
            Self::None | Self::Lz4 => Ok(()),
        }
    }
}

/// A compression setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidCompression {
    /// The zstd level is outside what zstd supports.
    #[error("zstd level {level} is outside {min}..={max}")]
    ZstdLevel {
        /// The level asked for.
        level: i32,
        /// Lowest level zstd supports.
        min: i32,
        /// Highest level zstd supports.
        max: i32,
    },
}

/// How snapshots are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Encoded states at least this large are compressed (and may be written as deltas);
    /// smaller ones are stored as they are.
    pub threshold_bytes: usize,
    /// The algorithm for full snapshots.
    pub algorithm: SnapshotCompression,
    /// Incremental snapshots: how many delta snapshots may follow a full one before the next
    /// full one. 0 (the default) writes every snapshot in full.
    pub max_deltas: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            threshold_bytes: 4 * 1024,
            algorithm: SnapshotCompression::default(),
            max_deltas: 0,
        }
    }
}

impl CompressionConfig {
    /// Checks the setting (see [`SnapshotCompression::validate`]).
    pub fn validate(&self) -> Result<(), InvalidCompression> {
        self.algorithm.validate()
    }

    /// The zstd level of delta snapshots: the configured one with zstd, else level 1, the
    /// fastest normal level, since choosing lz4 or no compression asks for speed.
    pub(crate) fn delta_level(&self) -> i32 {
        match self.algorithm {
            SnapshotCompression::Zstd { level } => level,
            SnapshotCompression::None | SnapshotCompression::Lz4 => 1,
        }
    }
}

/// Compresses `encoded` with `algorithm`; returns the bytes and the name to record.
pub(super) fn compress(
    encoded: Vec<u8>,
    algorithm: SnapshotCompression,
) -> Result<(Vec<u8>, &'static str), CodecError> {
    match algorithm {
        SnapshotCompression::None => Ok((encoded, COMPRESSION_NONE)),
        SnapshotCompression::Zstd { level } => zstd::bulk::compress(&encoded, level)
            .map(|bytes| (bytes, COMPRESSION_ZSTD))
            .map_err(|e| CodecError::Encode(format!("zstd: {e}"))),
        SnapshotCompression::Lz4 => Ok((lz4_flex::block::compress(&encoded), COMPRESSION_LZ4)),
    }
}

/// Decompresses stored bytes recorded with compression `name`. Never allocates more than the
/// input can truly expand to, whatever `recorded_size` claims (it is outside the checksum).
pub(super) fn decompress(
    name: &str,
    bytes: &[u8],
    recorded_size: u64,
) -> Result<Vec<u8>, CodecError> {
    match name {
        COMPRESSION_NONE => Ok(bytes.to_vec()),
        COMPRESSION_ZSTD => decompress_zstd(bytes, recorded_size),
        COMPRESSION_LZ4 => decompress_lz4(bytes, recorded_size),
        other => Err(CodecError::Unknown {
            what: "compression",
            name: other.to_owned(),
        }),
    }
}

/// Decompresses a zstd frame, reading at most one byte more than the recorded size.
///
/// The recorded size is metadata outside the checksum, so it may lie: it must never decide an
/// allocation up front (a damaged row claiming terabytes would abort the process). The output
/// grows as real bytes arrive, starting from a capacity bounded by the input.
fn decompress_zstd(bytes: &[u8], recorded_size: u64) -> Result<Vec<u8>, CodecError> {
    let decoder = zstd::stream::read::Decoder::with_buffer(bytes)
        .map_err(|e| CodecError::Decompress(e.to_string()))?;
    read_at_most(decoder, bytes.len(), recorded_size)
}

/// Reads a decoder's output up to one byte past `recorded_size` (so a longer output is seen as
/// a mismatch without reading all of it), from a capacity bounded by the input size.
pub(super) fn read_at_most(
    decoder: impl std::io::Read,
    input_len: usize,
    recorded_size: u64,
) -> Result<Vec<u8>, CodecError> {
    use std::io::Read;
    let initial = recorded_size.min(input_len as u64 * 8 + 1024);
    let mut out = Vec::with_capacity(usize::try_from(initial).unwrap_or(0));
    decoder
        .take(recorded_size.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| CodecError::Decompress(e.to_string()))?;
    Ok(out)
}

/// Decompresses an LZ4 block of `recorded_size` bytes. LZ4 blocks do not carry their size, so
/// the recorded one sizes the output; it is first checked against what the input could
/// possibly expand to, so a lying size cannot force a huge allocation.
fn decompress_lz4(bytes: &[u8], recorded_size: u64) -> Result<Vec<u8>, CodecError> {
    let possible = (bytes.len() as u64).saturating_mul(LZ4_MAX_RATIO);
    let size = usize::try_from(recorded_size)
        .ok()
        .filter(|_| recorded_size <= possible)
        .ok_or_else(|| {
            CodecError::Decompress(format!(
                "recorded size {recorded_size} is more than {} lz4 bytes can hold",
                bytes.len()
            ))
        })?;
    let mut out = vec![0u8; size];
    let written = lz4_flex::block::decompress_into(bytes, &mut out)
        .map_err(|e| CodecError::Decompress(format!("lz4: {e}")))?;
    out.truncate(written);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::codec::{CODEC_MSGPACK, decode, encode, seal, unseal};

    fn config(algorithm: SnapshotCompression) -> CompressionConfig {
        CompressionConfig {
            threshold_bytes: 0,
            algorithm,
            max_deltas: 0,
        }
    }

    #[test]
    fn every_algorithm_round_trips_and_records_its_name() {
        let value: Vec<String> = (0..2_000).map(|i| format!("entry-{}", i % 10)).collect();
        let encoded = encode(&value).unwrap();
        for (algorithm, name) in [
            (SnapshotCompression::None, "none"),
            (SnapshotCompression::Zstd { level: 1 }, "zstd"),
            (SnapshotCompression::Zstd { level: -5 }, "zstd"),
            (SnapshotCompression::Lz4, "lz4"),
        ] {
            let sealed = seal(encoded.clone(), &config(algorithm)).unwrap();
            assert_eq!(sealed.compression, name);
            let back = unseal(
                &sealed.bytes,
                CODEC_MSGPACK,
                sealed.compression,
                sealed.checksum,
                sealed.uncompressed_size,
            )
            .unwrap();
            assert_eq!(decode::<Vec<String>>(&back).unwrap(), value, "{name}");
        }
    }

    #[test]
    fn an_lz4_snapshot_with_a_lying_recorded_size_is_refused_without_allocating_it() {
        let value: Vec<u64> = (0..5_000).collect();
        let sealed = seal(encode(&value).unwrap(), &config(SnapshotCompression::Lz4)).unwrap();
        for lie in [
            0,
            sealed.uncompressed_size - 1,
            sealed.uncompressed_size + 1,
            1 << 40,
            u64::MAX,
        ] {
            let err = unseal(
                &sealed.bytes,
                CODEC_MSGPACK,
                COMPRESSION_LZ4,
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
    fn zstd_levels_outside_zstds_range_are_invalid_and_lz4_has_none_to_check() {
        assert!(SnapshotCompression::default().validate().is_ok());
        assert!(SnapshotCompression::Zstd { level: 22 }.validate().is_ok());
        assert!(matches!(
            SnapshotCompression::Zstd { level: 23 }.validate(),
            Err(InvalidCompression::ZstdLevel { level: 23, .. })
        ));
        assert!(
            SnapshotCompression::Zstd { level: i32::MIN }
                .validate()
                .is_err()
        );
        assert!(SnapshotCompression::Lz4.validate().is_ok());
    }
}
