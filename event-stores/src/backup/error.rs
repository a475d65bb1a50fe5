//! Why an export or an import failed.

use crate::error::StoreError;
use crate::invalid_input::InvalidInput;
use crate::stream::StreamId;

/// Every failure of [`export`](super::export), [`import`](super::import) and
/// [`verify`](super::verify). Frames are numbered from 0 (the header) in file order.
///
/// An import that fails with anything but [`Store`](Self::Store) has written nothing: those
/// are all found by its first pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Reading or writing the file failed.
    #[error("backup file I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with [`MAGIC`](super::MAGIC): it is not a backup file.
    #[error("not a backup file: it does not start with the bytes \"ESBACKUP\"")]
    BadMagic,
    /// The file is a backup in a format this version cannot read (a newer one, most likely).
    #[error(
        "backup format version {found} is not supported (this build reads version {supported}); \
         use a newer build to import it"
    )]
    UnsupportedVersion {
        /// The file's format version.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A frame's bytes do not match its checksum: the file was damaged.
    #[error("frame {frame} of the backup is damaged: its checksum does not match its contents")]
    Checksum {
        /// The damaged frame.
        frame: u64,
    },
    /// The compressed stream is damaged (zstd could not decode it) around a frame.
    #[error("the backup's compressed data is damaged at frame {frame}: {message}")]
    Decompress {
        /// The frame being read when decoding failed.
        frame: u64,
        /// What zstd reported.
        message: String,
    },
    /// The file ends before its trailer: it was cut short (an interrupted copy or export).
    #[error("the backup is truncated: it ends after {frames} complete frames, before its trailer")]
    Truncated {
        /// Complete frames read before the end.
        frames: u64,
    },
    /// A frame is larger than [`MAX_FRAME_BYTES`](super::MAX_FRAME_BYTES): in a file, a corrupt
    /// length; in an export, a snapshot or event too large for the format.
    #[error("frame {frame} is {len} bytes long; a backup frame holds at most {max}")]
    FrameTooLarge {
        /// The frame.
        frame: u64,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The file's frames are intact but do not make a valid backup (a body that does not
    /// decode, frames out of order, a trailer that does not match, data after the trailer, a
    /// snapshot of a stream the file has no events of, an invalid stream id …).
    #[error("frame {frame} of the backup is invalid: {reason}")]
    Malformed {
        /// The offending frame.
        frame: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// An event or snapshot of the file is one the stores refuse: an event type, snapshot codec
    /// or compression name they do not take (control characters, a bad length), an event id
    /// the file holds twice, or a payload or snapshot above the
    /// [`limits`](super::ImportOptions::limits) of the import. Found by the first pass, like
    /// every error here but [`Store`](Self::Store): nothing was imported.
    #[error("frame {frame} of the backup holds what a store refuses: {source}")]
    InvalidInput {
        /// The offending frame.
        frame: u64,
        /// Why a store would refuse it, as the store would say.
        source: InvalidInput,
    },
    /// A stream's versions in the file have a gap or go backwards.
    #[error(
        "the backup's events of {stream} are not contiguous: version {expected} was expected, {found} was found"
    )]
    NotContiguous {
        /// The stream.
        stream: StreamId,
        /// The version that should have come next.
        expected: u64,
        /// The version that came.
        found: u64,
    },
    /// The target store's stream cannot take the file's events: it is behind the file's first
    /// version (a gap), or holds other events at the file's versions. Nothing was imported.
    #[error(
        "cannot import {stream}: the store holds it at version {stored_version}, but the backup \
         starts it at version {first_in_file}{detail}; nothing was imported"
    )]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// The stream's version in the target store.
        stored_version: u64,
        /// The first version of the stream in the file.
        first_in_file: u64,
        /// Why that is a conflict, for the message.
        detail: &'static str,
    },
    /// The scope of an export makes no sense (ids without a type, an empty time range).
    #[error("invalid backup scope: {0}")]
    InvalidScope(String),
    /// A frame could not be encoded (an export).
    #[error("cannot encode backup frame {frame}: {message}")]
    Encode {
        /// The frame.
        frame: u64,
        /// What the encoder reported.
        message: String,
    },
    /// The store failed (reading in an export, checking or writing in an import).
    #[error("store error during backup: {0}")]
    Store(#[from] StoreError),
}
