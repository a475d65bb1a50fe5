//! Reading a backup file: frames checked one by one ([`FrameReader`]), and their order and
//! trailer checked over the whole file ([`BackupReader`]).

use std::io::{self, BufReader, Read};

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::BackupError;
use super::format::{
    Counting, EventFrame, FORMAT_VERSION, Frame, HeaderFrame, MAGIC, MAX_FRAME_BYTES,
    SnapshotFrame, TrailerFrame, malformed,
};
use super::{Phase, Progress};

/// One item of a backup file's body.
pub(super) enum Item {
    Event(u64, EventFrame),
    Snapshot(u64, SnapshotFrame),
}

/// Reads a file's frames and checks their order: one header, events, snapshots, one trailer
/// that matches what came before it, then the end.
pub(super) struct BackupReader<R: Read> {
    /// The frames underneath.
    pub frames: FrameReader<R>,
    /// The file's header (the first frame).
    pub header: HeaderFrame,
    in_snapshots: bool,
    /// The trailer, once read and checked.
    pub trailer: Option<TrailerFrame>,
    events: u64,
    snapshots: u64,
}

impl<R: Read> BackupReader<R> {
    pub fn open(input: R) -> Result<Self, BackupError> {
        let mut frames = FrameReader::open(input)?;
        let header = match frames.next()? {
            Some(Frame::Header(header)) => header,
            Some(_) => return Err(malformed(0, "the first frame is not the header".into())),
            None => return Err(BackupError::Truncated { frames: 0 }),
        };
        if header.format != FORMAT_VERSION {
            return Err(BackupError::UnsupportedVersion {
                found: header.format,
                supported: FORMAT_VERSION,
            });
        }
        Ok(Self {
            frames,
            header,
            in_snapshots: false,
            trailer: None,
            events: 0,
            snapshots: 0,
        })
    }

    pub fn progress(&self, phase: Phase, (events, snapshots): (u64, u64)) -> Progress {
        Progress {
            phase,
            events,
            snapshots,
            bytes: self.frames.bytes(),
        }
    }

    /// The next event or snapshot; `None` once the trailer has been read and checked.
    pub fn next(&mut self) -> Result<Option<Item>, BackupError> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        let frame = self.frames.frames();
        let running = self.frames.running_checksum();
        match self.frames.next()? {
            None => Err(BackupError::Truncated { frames: frame }),
            Some(Frame::Header(_)) => Err(malformed(frame, "a second header".into())),
            Some(Frame::Event(_)) if self.in_snapshots => {
                Err(malformed(frame, "an event after the snapshots".into()))
            }
            Some(Frame::Event(event)) => {
                self.events += 1;
                Ok(Some(Item::Event(frame, event)))
            }
            Some(Frame::Snapshot(snapshot)) => {
                self.in_snapshots = true;
                self.snapshots += 1;
                Ok(Some(Item::Snapshot(frame, snapshot)))
            }
            Some(Frame::Trailer(trailer)) => {
                let counted = (frame, self.events, self.snapshots, running);
                let claimed = (
                    trailer.frames,
                    trailer.events,
                    trailer.snapshots,
                    trailer.running_checksum,
                );
                if counted != claimed {
                    return Err(malformed(
                        frame,
                        format!(
                            "the trailer does not match the frames before it (frames, events, \
                             snapshots, running checksum: {claimed:?} claimed, {counted:?} \
                             read): frames are missing, added or out of order"
                        ),
                    ));
                }
                self.frames.expect_end()?;
                self.trailer = Some(trailer);
                Ok(None)
            }
        }
    }
}

/// Reads frames back, checking each one's length and checksum; the order of the frames and
/// the trailer are the caller's to check ([`super::import`]).
pub(super) struct FrameReader<R: Read> {
    decoder: zstd::stream::read::Decoder<'static, BufReader<Counting<R>>>,
    frames: u64,
    running: Xxh3,
    body: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// Checks the magic and the version and starts decompressing.
    pub fn open(input: R) -> Result<Self, BackupError> {
        let mut input = Counting::new(input);
        let mut prefix = [0u8; 12];
        let n = read_up_to(&mut input, &mut prefix)?;
        let (magic, version) = prefix.split_at(8);
        if n < MAGIC.len() {
            return Err(if prefix[..n] == MAGIC[..n] && n > 0 {
                BackupError::Truncated { frames: 0 }
            } else {
                BackupError::BadMagic
            });
        }
        if magic != MAGIC {
            return Err(BackupError::BadMagic);
        }
        let Ok(version) = <[u8; 4]>::try_from(version) else {
            return Err(BackupError::Truncated { frames: 0 });
        };
        if n < prefix.len() {
            return Err(BackupError::Truncated { frames: 0 });
        }
        let found = u32::from_le_bytes(version);
        if found != FORMAT_VERSION {
            return Err(BackupError::UnsupportedVersion {
                found,
                supported: FORMAT_VERSION,
            });
        }
        let decoder =
            zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(128 * 1024, input))?;
        Ok(Self {
            decoder,
            frames: 0,
            running: Xxh3::new(),
            body: Vec::new(),
        })
    }

    /// Frames read so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes of the file read so far (ahead of the frames by the read buffer).
    pub fn bytes(&self) -> u64 {
        self.decoder.get_ref().get_ref().bytes
    }

    /// The running checksum of the frames read so far.
    pub fn running_checksum(&self) -> u64 {
        self.running.digest()
    }

    /// The next frame, or `None` at the end of the stream (before a frame starts).
    pub fn next(&mut self) -> Result<Option<Frame>, BackupError> {
        let frame = self.frames;
        let mut prefix = [0u8; 12];
        let n = read_up_to(&mut self.decoder, &mut prefix).map_err(|e| self.read_error(e))?;
        if n == 0 {
            return Ok(None);
        }
        if n < prefix.len() {
            return Err(BackupError::Truncated { frames: frame });
        }
        let (len, checksum) = prefix.split_at(4);
        let len = u32::from_le_bytes(<[u8; 4]>::try_from(len).unwrap_or_default());
        let checksum = u64::from_le_bytes(<[u8; 8]>::try_from(checksum).unwrap_or_default());
        if len > MAX_FRAME_BYTES {
            return Err(BackupError::FrameTooLarge {
                frame,
                len: u64::from(len),
                max: u64::from(MAX_FRAME_BYTES),
            });
        }
        // `take` + `read_to_end` grows the buffer with the bytes that actually arrive, so a
        // damaged length never allocates more than the file holds.
        self.body.clear();
        let got = (&mut self.decoder)
            .take(u64::from(len))
            .read_to_end(&mut self.body)
            .map_err(|e| self.read_error(e))?;
        if got < len as usize {
            return Err(BackupError::Truncated { frames: frame });
        }
        if xxh3_64(&self.body) != checksum {
            return Err(BackupError::Checksum { frame });
        }
        let decoded: Frame = rmp_serde::from_slice(&self.body)
            .map_err(|e| malformed(frame, format!("the frame does not decode: {e}")))?;
        // The trailer's own checksum is not part of the running checksum it carries.
        if !matches!(decoded, Frame::Trailer(_)) {
            self.running.update(&checksum.to_le_bytes());
        }
        self.frames += 1;
        Ok(Some(decoded))
    }

    /// Checks that nothing follows the trailer (and lets zstd check its stream checksum).
    pub fn expect_end(&mut self) -> Result<(), BackupError> {
        let mut byte = [0u8; 1];
        match read_up_to(&mut self.decoder, &mut byte).map_err(|e| self.read_error(e))? {
            0 => Ok(()),
            _ => Err(malformed(self.frames, "data after the trailer".to_owned())),
        }
    }

    /// Which error a failed read of the decompressed stream is: the file's I/O, its end, or
    /// damage found by zstd.
    fn read_error(&self, error: io::Error) -> BackupError {
        if self.decoder.get_ref().get_ref().failed {
            BackupError::Io(error)
        } else if error.kind() == io::ErrorKind::UnexpectedEof {
            BackupError::Truncated {
                frames: self.frames,
            }
        } else {
            BackupError::Decompress {
                frame: self.frames,
                message: error.to_string(),
            }
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
