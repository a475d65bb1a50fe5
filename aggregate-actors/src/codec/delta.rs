//! Delta snapshots: a state compressed against an earlier full snapshot of the same aggregate.
//!
//! A state that changes a little per command compresses to almost nothing when zstd may refer
//! back into the previous state: the base snapshot's *encoded, uncompressed* bytes are given to
//! zstd as a raw-content prefix (`ZSTD_CCtx_refPrefix`), so every unchanged run is a short
//! back-reference. The window is widened to cover base and state together, so matches reach
//! the whole base (up to zstd's default decoder limit of 128 MiB).
//!
//! Stored bytes (compression [`COMPRESSION_ZSTD_DELTA`]):
//!
//! | bytes | content |
//! |---|---|
//! | 0..4 | the delta's number since its base, u32 little-endian (1 for the first delta) |
//! | 4.. | one zstd frame, with content size and zstd's own content checksum |
//!
//! The number lets the writer bound a chain at K deltas from the newest snapshot alone, even
//! after retention deleted older deltas of the chain. zstd's content checksum catches a
//! decompression against the wrong prefix, which could otherwise yield bytes that still decode.
//! The record's xxh3 checksum covers all stored bytes, as for full snapshots; the record also
//! names its base ([`SnapshotBase`](event_stores::SnapshotBase)): version and checksum.

use zstd::zstd_safe::{CCtx, CParameter};

use super::compression::read_at_most;
use super::{
    COMPRESSION_ZSTD_DELTA, CodecError, SealedSnapshot, check_size, check_stored, checksum,
};

/// Bytes before the zstd frame: the delta's number.
const HEADER: usize = 4;
/// zstd's smallest window.
const MIN_WINDOW_LOG: u32 = 10;
/// The largest window a zstd decoder accepts without being told otherwise (128 MiB).
const MAX_WINDOW_LOG: u32 = 27;

/// Compresses `encoded` against `base` (the base snapshot's encoded bytes) as delta number
/// `number` of its chain, at zstd `level`.
pub fn seal_delta(
    encoded: &[u8],
    base: &[u8],
    number: u32,
    level: i32,
) -> Result<SealedSnapshot, CodecError> {
    let fail = |e: usize| {
        CodecError::Encode(format!(
            "zstd delta: {}",
            zstd::zstd_safe::get_error_name(e)
        ))
    };
    let mut context = CCtx::create();
    context
        .set_parameter(CParameter::CompressionLevel(level))
        .map_err(fail)?;
    context
        .set_parameter(CParameter::WindowLog(window_log(
            base.len() + encoded.len(),
        )))
        .map_err(fail)?;
    context
        .set_parameter(CParameter::ChecksumFlag(true))
        .map_err(fail)?;
    context.ref_prefix(base).map_err(fail)?;
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(encoded.len()));
    context.compress2(&mut frame, encoded).map_err(fail)?;
    let mut bytes = Vec::with_capacity(HEADER + frame.len());
    bytes.extend_from_slice(&number.to_le_bytes());
    bytes.extend_from_slice(&frame);
    Ok(SealedSnapshot {
        checksum: checksum(&bytes),
        bytes: bytes.into(),
        compression: COMPRESSION_ZSTD_DELTA,
        uncompressed_size: encoded.len() as u64,
    })
}

/// Checks a delta's checksum and codec and decompresses it against `base` (the base
/// snapshot's encoded bytes); returns the encoded state.
pub fn unseal_delta(
    bytes: &[u8],
    codec: &str,
    stored_checksum: u64,
    uncompressed_size: u64,
    base: &[u8],
) -> Result<Vec<u8>, CodecError> {
    check_stored(bytes, codec, stored_checksum)?;
    let frame = bytes
        .get(HEADER..)
        .ok_or_else(|| CodecError::Decompress("delta shorter than its header".into()))?;
    // The decoder's default window limit (2^27, what the writer stays within) bounds what a
    // damaged frame can make it reserve; the output is bounded by `read_at_most`.
    let decoder = zstd::stream::read::Decoder::with_ref_prefix(frame, base)
        .map_err(|e| CodecError::Decompress(e.to_string()))?
        .single_frame();
    let encoded = read_at_most(decoder, frame.len().max(base.len()), uncompressed_size)?;
    check_size(encoded, uncompressed_size)
}

/// The delta's number since its base, if the bytes are long enough to hold one.
pub fn delta_number(bytes: &[u8]) -> Option<u32> {
    let header: [u8; HEADER] = bytes.get(..HEADER)?.try_into().ok()?;
    Some(u32::from_le_bytes(header))
}

/// The window (log2 bytes) that covers `size` bytes, within what decoders accept by default.
fn window_log(size: usize) -> u32 {
    let needed = usize::BITS - size.saturating_sub(1).leading_zeros();
    needed.clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::codec::{CODEC_MSGPACK, encode};

    /// A state and the same state with one element changed.
    fn states() -> (Vec<u8>, Vec<u8>) {
        let mut x = 1u64;
        let mut values: Vec<u64> = (0..5_000)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                x
            })
            .collect();
        let base = encode(&values).unwrap();
        values[2_500] = 42;
        (base, encode(&values).unwrap())
    }

    fn open(sealed: &SealedSnapshot, base: &[u8]) -> Result<Vec<u8>, CodecError> {
        unseal_delta(
            &sealed.bytes,
            CODEC_MSGPACK,
            sealed.checksum,
            sealed.uncompressed_size,
            base,
        )
    }

    #[test]
    fn a_delta_round_trips_against_its_base_and_is_tiny_for_a_small_change() {
        let (base, state) = states();
        let sealed = seal_delta(&state, &base, 3, 3).unwrap();
        assert_eq!(sealed.compression, COMPRESSION_ZSTD_DELTA);
        assert_eq!(delta_number(&sealed.bytes), Some(3));
        assert!(
            sealed.bytes.len() < state.len() / 100,
            "{}",
            sealed.bytes.len()
        );
        assert_eq!(open(&sealed, &base).unwrap(), state);
    }

    #[test]
    fn a_delta_opened_against_another_base_is_refused() {
        let (base, state) = states();
        let sealed = seal_delta(&state, &base, 1, 3).unwrap();
        let mut other = base.clone();
        other[100] ^= 0x40;
        assert!(matches!(
            open(&sealed, &other),
            Err(CodecError::Decompress(_))
        ));
        assert!(matches!(open(&sealed, &[]), Err(CodecError::Decompress(_))));
    }

    #[test]
    fn a_damaged_or_short_delta_is_refused_without_allocating_a_lying_size() {
        let (base, state) = states();
        let sealed = seal_delta(&state, &base, 1, 3).unwrap();
        let short = &sealed.bytes[..3];
        assert!(matches!(
            unseal_delta(short, CODEC_MSGPACK, checksum(short), 10, &base),
            Err(CodecError::Decompress(_))
        ));
        for lie in [0, sealed.uncompressed_size + 1, u64::MAX] {
            let err = unseal_delta(&sealed.bytes, CODEC_MSGPACK, sealed.checksum, lie, &base);
            assert!(matches!(err, Err(CodecError::Decompress(_))), "size {lie}");
        }
        let err = unseal_delta(&sealed.bytes, CODEC_MSGPACK, sealed.checksum ^ 1, 1, &base);
        assert!(matches!(err, Err(CodecError::Checksum { .. })));
    }

    #[test]
    fn a_full_snapshot_reader_refuses_a_delta_as_needing_its_base() {
        let (base, state) = states();
        let sealed = seal_delta(&state, &base, 1, 3).unwrap();
        let err = crate::codec::unseal(
            &sealed.bytes,
            CODEC_MSGPACK,
            sealed.compression,
            sealed.checksum,
            sealed.uncompressed_size,
        );
        assert_eq!(err, Err(CodecError::NeedsBase));
    }
}
