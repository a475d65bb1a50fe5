//! The snapshot and event decoders never panic on hostile bytes (errors are fine): arbitrary
//! bytes, real snapshots mutated, zstd frames of noise, every codec and compression name,
//! right and wrong checksums and sizes go through `codec::unseal` then `codec::decode` into the
//! real state type; arbitrary and mutated event payloads go through the event decoder; zstd
//! frames whose header or recorded size lies about the uncompressed size are refused, never
//! trusted. Recorded sizes far beyond memory are probed in a separate process, since an
//! allocation failure aborts the process rather than panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Range;

use aggregate_actors::codec::{self, CODEC_MSGPACK, COMPRESSION_NONE, COMPRESSION_ZSTD};
use integration_tests::run_probe;
use integration_tests::wallet::{WalletEvent, WalletState};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use uuid::Uuid;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// In-process recorded sizes stay below this; larger ones are probed out of process.
const IN_PROCESS_MAX_SIZE: u64 = 64 << 20;

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn wallet_event() -> impl Strategy<Value = WalletEvent> + Clone {
    let command = any::<u128>().prop_map(Uuid::from_u128);
    prop_oneof![
        (command.clone(), 0u32..4, 1u32..5, any::<i64>()).prop_map(
            |(command, part, parts, amount)| WalletEvent::Deposited {
                command,
                part,
                parts,
                amount
            }
        ),
        (command.clone(), any::<i64>())
            .prop_map(|(command, amount)| WalletEvent::Withdrew { command, amount }),
        (command.clone(), ".{0,40}").prop_map(|(command, text)| WalletEvent::Memoed {
            command,
            part: 0,
            parts: 1,
            text
        }),
        command.prop_map(|command| WalletEvent::Poison { command }),
    ]
}

fn wallet_state() -> impl Strategy<Value = WalletState> + Clone {
    (
        any::<i64>(),
        any::<i64>(),
        any::<u64>(),
        vec(".{0,30}", 0..40),
        any::<u64>(),
    )
        .prop_map(|(balance, lowest, events, memos, digest)| WalletState {
            balance,
            lowest,
            events,
            memos,
            digest,
        })
}

/// Bytes with damage: bit flips, truncation, insertion.
fn mutate(bytes: Vec<u8>, flips: Vec<(usize, u8)>, cut: Option<usize>, insert: Vec<u8>) -> Vec<u8> {
    let mut bytes = bytes;
    for (at, mask) in flips {
        if !bytes.is_empty() {
            let at = at % bytes.len();
            bytes[at] ^= mask.max(1);
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    if !insert.is_empty() {
        let at = insert[0] as usize % (bytes.len() + 1);
        bytes.splice(at..at, insert);
    }
    bytes
}

/// Stored snapshot bytes with the size of what they decode to when intact.
fn snapshot_bytes() -> impl Strategy<Value = (Vec<u8>, u64)> {
    let sealed = (wallet_state(), any::<bool>()).prop_map(|(state, compress)| {
        let encoded = codec::encode(&state).unwrap();
        let size = encoded.len() as u64;
        let bytes = if compress {
            zstd::bulk::compress(&encoded, 1).unwrap()
        } else {
            encoded
        };
        (bytes, size)
    });
    prop_oneof![
        2 => vec(any::<u8>(), 0..300).prop_map(|b| { let n = b.len() as u64; (b, n) }),
        3 => sealed.clone(),
        4 => (sealed, vec((any::<usize>(), any::<u8>()), 0..4), proptest::option::of(any::<usize>()), vec(any::<u8>(), 0..8))
            .prop_map(|((bytes, size), flips, cut, insert)| (mutate(bytes, flips, cut, insert), size)),
        2 => vec(any::<u8>(), 0..600).prop_map(|noise| {
            let n = noise.len() as u64;
            (zstd::bulk::compress(&noise, 1).unwrap(), n)
        }),
        1 => vec(any::<u8>(), 0..64).prop_map(|noise| {
            let mut bytes = ZSTD_MAGIC.to_vec();
            bytes.extend(noise);
            let n = bytes.len() as u64;
            (bytes, n)
        }),
    ]
}

#[derive(Debug, Clone)]
struct StoredSnapshot {
    bytes: Vec<u8>,
    codec: String,
    compression: String,
    checksum: u64,
    uncompressed_size: u64,
}

fn stored_snapshot() -> impl Strategy<Value = StoredSnapshot> {
    let codec = prop_oneof![8 => Just(CODEC_MSGPACK.to_owned()), 1 => ".{0,12}"];
    let compression = prop_oneof![
        4 => Just(COMPRESSION_ZSTD.to_owned()),
        4 => Just(COMPRESSION_NONE.to_owned()),
        1 => ".{0,12}",
    ];
    // 0: correct checksum, else a random one.
    let checksum = prop_oneof![8 => Just(None), 2 => any::<u64>().prop_map(Some)];
    // How the recorded size relates to the true one.
    let size = prop_oneof![
        6 => Just(0i64),
        2 => -64i64..64,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
    ];
    (snapshot_bytes(), codec, compression, checksum, size).prop_map(
        |((bytes, true_size), codec, compression, checksum, size)| StoredSnapshot {
            checksum: checksum.unwrap_or_else(|| codec::checksum(&bytes)),
            uncompressed_size: match size {
                i64::MIN => 0,
                i64::MAX => IN_PROCESS_MAX_SIZE,
                delta => true_size
                    .saturating_add_signed(delta)
                    .min(IN_PROCESS_MAX_SIZE),
            },
            bytes,
            codec,
            compression,
        },
    )
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn arbitrary_stored_snapshots_never_panic_the_snapshot_decoder(snapshot in stored_snapshot()) {
        let unsealed = codec::unseal(
            &snapshot.bytes,
            &snapshot.codec,
            &snapshot.compression,
            snapshot.checksum,
            snapshot.uncompressed_size,
        );
        if let Ok(encoded) = unsealed {
            prop_assert_eq!(encoded.len() as u64, snapshot.uncompressed_size, "an accepted snapshot has its recorded size");
            prop_assert_eq!(snapshot.checksum, codec::checksum(&snapshot.bytes));
            let _ = codec::decode::<WalletState>(&encoded);
            let _ = codec::decode::<WalletEvent>(&encoded);
        }
    }
}

fn event_payload() -> impl Strategy<Value = Vec<u8>> {
    let valid = wallet_event().prop_map(|event| codec::encode(&event).unwrap());
    prop_oneof![
        3 => vec(any::<u8>(), 0..200),
        2 => valid.clone(),
        5 => (valid, vec((any::<usize>(), any::<u8>()), 0..4), proptest::option::of(any::<usize>()), vec(any::<u8>(), 0..8))
            .prop_map(|(bytes, flips, cut, insert)| mutate(bytes, flips, cut, insert)),
    ]
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn arbitrary_event_payloads_never_panic_the_event_decoder(payload in event_payload()) {
        if let Ok(event) = codec::decode::<WalletEvent>(&payload) {
            // What decodes re-encodes and decodes to the same event.
            let again = codec::encode(&event).unwrap();
            prop_assert_eq!(codec::decode::<WalletEvent>(&again).unwrap(), event);
        }
        let _ = codec::decode::<WalletState>(&payload);
    }
}

/// Where a zstd frame header keeps its Frame_Content_Size field, if it has one.
fn content_size_field(frame: &[u8]) -> Option<Range<usize>> {
    if frame.len() < 6 || frame[..4] != ZSTD_MAGIC {
        return None;
    }
    let descriptor = frame[4];
    let single_segment = descriptor & 0x20 != 0;
    let dictionary_id = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let width = match descriptor >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let start = 5 + usize::from(!single_segment) + dictionary_id;
    (width > 0 && start + width <= frame.len()).then(|| start..start + width)
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn zstd_frames_lying_about_their_size_are_refused_not_trusted(
        state in wallet_state(),
        header_lie in proptest::option::of(any::<u64>()),
        recorded_lie in prop_oneof![3 => Just(0i64), 1 => -100_000i64..100_000],
    ) {
        let encoded = codec::encode(&state).unwrap();
        let mut frame = zstd::bulk::compress(&encoded, 1).unwrap();
        let field = content_size_field(&frame);
        prop_assert!(field.is_some(), "zstd records the content size");
        if let (Some(lie), Some(field)) = (header_lie, field) {
            let width = field.len();
            frame[field].copy_from_slice(&lie.to_le_bytes()[..width]);
        }
        let recorded = (encoded.len() as u64).saturating_add_signed(recorded_lie).min(IN_PROCESS_MAX_SIZE);
        let result = codec::unseal(&frame, CODEC_MSGPACK, COMPRESSION_ZSTD, codec::checksum(&frame), recorded);
        match result {
            Ok(bytes) => {
                prop_assert_eq!(recorded, encoded.len() as u64, "a lying recorded size was accepted");
                prop_assert_eq!(&bytes, &encoded, "accepted bytes differ from what was compressed");
                prop_assert_eq!(codec::decode::<WalletState>(&bytes).unwrap(), state);
            }
            Err(_) => prop_assert!(
                recorded != encoded.len() as u64 || header_lie.is_some(),
                "an honest frame was refused"
            ),
        }
    }
}

const PROBE: &str = env!("CARGO_BIN_EXE_snapshot_probe");

/// A recorded size is not covered by the checksum (it is a column next to the bytes), so a
/// corrupt one must be refused like any other damage, without trying to allocate it.
#[test]
fn recorded_sizes_far_beyond_memory_are_refused_without_allocating_them() {
    let mut failures = Vec::new();
    for compression in [COMPRESSION_NONE, COMPRESSION_ZSTD] {
        for size in [1u64 << 40, i64::MAX as u64, u64::MAX] {
            let size_arg = size.to_string();
            match run_probe(PROBE, &["unseal", compression, &size_arg]) {
                Ok(out) if out.starts_with("refused") => {}
                Ok(out) => failures.push(format!("{compression}, size {size}: {out}")),
                Err(died) => failures.push(format!("{compression}, size {size}: {died}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "codec::unseal must refuse absurd recorded sizes:\n  - {}",
        failures.join("\n  - ")
    );
}
