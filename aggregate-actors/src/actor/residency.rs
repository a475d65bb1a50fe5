//! Between the hot and resident tiers (see [`crate::resident`]): a stopping actor leaves an
//! entry behind, the next activation of its id starts from it, and entries pushed out of the
//! budget go cold, snapshotted first when their state is ahead of their last snapshot.

use std::sync::Arc;
use std::time::Instant;

use event_stores::StreamId;

use super::{AggregateActor, AggregateContext};
use crate::aggregate::Aggregate;
use crate::codec;
use crate::dedup::RecentCommands;
use crate::metrics::ActivationReport;
use crate::resident::{Resident, ResidentState};
use crate::snapshot_writer::{SnapshotJob, WriteOutcome};

impl<A: Aggregate> AggregateActor<A> {
    /// Leaves this aggregate in the resident tier. `false` when it cannot: the tier is off,
    /// nothing is stored, or the state is not known to match the store (an unconfirmed append,
    /// a fence, a presumed-new stream), in which case the next activation must read.
    pub(super) fn become_resident(&mut self) -> bool {
        let resident = &self.context.resident;
        if !resident.is_on() || self.version == 0 || self.stale || self.fenced || self.presumed_new
        {
            return false;
        }
        let Some(last_event_id) = self.last_event_id else {
            return false;
        };
        // Encoded into the thread's scratch buffer: its length is the entry's charge, and only
        // a state too large to keep decoded is copied out of it.
        let decoded_max = resident.decoded_max_bytes();
        let encoded = codec::encode_in_scratch(&self.state, |bytes: &[u8]| {
            let kept = (bytes.len() > decoded_max).then(|| Box::<[u8]>::from(bytes));
            (bytes.len(), kept)
        });
        let (state_len, state) = match encoded {
            Ok((len, Some(bytes))) => (len, ResidentState::Encoded(bytes)),
            Ok((len, None)) => (len, ResidentState::Decoded(std::mem::take(&mut self.state))),
            Err(error) => {
                tracing::warn!(stream = %self.stream, %error, "state could not be encoded for the resident tier");
                return false;
            }
        };
        let entry = Resident {
            version: self.version,
            last_event_id,
            last_snapshot_version: self.last_snapshot_version,
            last_snapshot_size: self.last_snapshot_size,
            event_bytes_since_snapshot: self.event_bytes_since_snapshot,
            last_snapshot_at: self.last_snapshot_at,
            state,
            state_len,
            commands: self.recent.to_vec().into_boxed_slice(),
        };
        let pushed_out = resident.keep(self.stream.aggregate_id().to_owned(), entry);
        self.context.demote(pushed_out);
        true
    }

    /// An actor started from the id's resident entry, if it has one: no store read.
    pub(super) fn promote(context: &Arc<AggregateContext<A>>, stream: &StreamId) -> Option<Self> {
        let started = Instant::now();
        let entry = context.resident.take(stream.aggregate_id())?;
        let state = match entry.state {
            ResidentState::Decoded(state) => state,
            ResidentState::Encoded(bytes) => match codec::decode::<A::State>(&bytes) {
                Ok(state) => state,
                Err(error) => {
                    // Our own bytes of a moment ago; should they not decode, the stores still
                    // hold everything: read them instead.
                    tracing::error!(%stream, %error, "a resident entry did not decode; reading the stores");
                    context.resident.undecodable();
                    return None;
                }
            },
        };
        let activation = ActivationReport {
            version: entry.version,
            elapsed: started.elapsed(),
            from_resident: true,
            ..ActivationReport::default()
        };
        context.metrics.activated_without_read(&activation);
        Some(Self {
            context: Arc::clone(context),
            stream: stream.clone(),
            state,
            version: entry.version,
            last_event_id: Some(entry.last_event_id),
            stale: false,
            fenced: false,
            presumed_new: false,
            activation,
            recent: RecentCommands::from_snapshot(
                entry.commands.into_vec(),
                context.settings.dedup,
            ),
            last_snapshot_version: entry.last_snapshot_version,
            last_snapshot_at: entry.last_snapshot_at,
            snapshotted_since_activation: false,
            event_bytes_since_snapshot: entry.event_bytes_since_snapshot,
            last_snapshot_size: entry.last_snapshot_size,
            timers: super::timers::ActorTimers::new(),
        })
    }
}

impl<A: Aggregate> AggregateContext<A> {
    /// Demotes every resident entry whose id `matches` to cold (shutdown, passivation of all
    /// actors or of ids that move to another node).
    pub(crate) fn demote_resident(&self, matches: impl Fn(&str) -> bool) {
        let taken = self.resident.take_matching(matches);
        self.demote(taken);
    }

    /// Demotes the resident entry of `id` to cold (a requested passivation), if it has one;
    /// true if it had. Taken under its shard's lock, as a promotion takes it: should the id's
    /// next activation win the entry, it is live again with all it held, and this finds none.
    pub(crate) fn demote_resident_id(&self, id: &str) -> bool {
        let Some(entry) = self.resident.take_to_demote(id) else {
            return false;
        };
        self.demote(vec![(id.to_owned(), entry)]);
        true
    }

    /// Lets `entries` go cold, handing a snapshot of each one ahead of its last snapshot to
    /// the writer first (unless the type takes no passivation snapshots).
    pub(super) fn demote(&self, entries: Vec<(String, Resident<A::State>)>) {
        for (id, entry) in entries {
            let snapshot = self.settings.snapshot_on_passivation && entry.is_ahead_of_snapshot();
            let snapshotted = snapshot && self.snapshot_resident(&id, entry);
            self.resident.demoted(snapshotted);
        }
    }

    fn snapshot_resident(&self, id: &str, entry: Resident<A::State>) -> bool {
        let stream = match StreamId::new(A::TYPE, id) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::error!(%id, %error, "a resident entry's id is not a valid stream id");
                return false;
            }
        };
        let body = match &entry.state {
            ResidentState::Encoded(state) => {
                codec::encode_snapshot_from_parts(state, &entry.commands)
            }
            ResidentState::Decoded(state) => codec::encode_snapshot(state, &entry.commands),
        };
        let body = match body {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%stream, %error, "a resident entry could not be wrapped as a snapshot");
                return false;
            }
        };
        tracing::debug!(%stream, version = entry.version, "snapshot on demotion to cold");
        self.submit_snapshot(stream, entry.version, entry.last_event_id, body, Vec::new());
        true
    }

    /// Hands an encoded snapshot body to the background writer with this type's settings.
    pub(super) fn submit_snapshot(
        &self,
        stream: StreamId,
        version: u64,
        last_event_id: uuid::Uuid,
        encoded: Vec<u8>,
        waiters: Vec<tokio::sync::oneshot::Sender<WriteOutcome>>,
    ) {
        let settings = &self.settings;
        self.writer.submit(SnapshotJob {
            stream,
            version,
            last_event_id,
            state_schema_version: A::STATE_SCHEMA_VERSION,
            codec: codec::CODEC_MSGPACK_WITH_COMMANDS,
            verify: super::snapshots::verify_snapshot::<A>,
            encoded,
            compression: settings.compression,
            retention: settings.retention,
            archive: settings.archive.clone(),
            metrics: Arc::clone(&self.metrics),
            waiters,
        });
    }
}
