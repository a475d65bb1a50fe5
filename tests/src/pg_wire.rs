//! Counts the statements a PostgreSQL client runs, from the bytes it sends: every execution of
//! a prepared statement is one `Execute` message (sent with its `Bind` and `Sync` in one round
//! trip once the statement is prepared on the connection), every simple query one `Query`
//! message. Preparing (`Parse`/`Describe`/`Sync`) and sqlx's ping of a connection returning to
//! its pool (a bare `Sync`) run no statement and are not counted. The fault proxy feeds each
//! connection's client-to-server bytes through a [`StatementCounter`].

/// SSLRequest and GSSENCRequest codes: untyped messages before the startup message.
const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];

/// Parses a client's message stream across arbitrary chunk boundaries.
#[derive(Debug, Default)]
pub struct StatementCounter {
    /// Past the (untyped) startup message: messages start with a type byte.
    typed: bool,
    /// The header of the message being read (type byte, if typed, and 4-byte length).
    header: Vec<u8>,
    /// Bytes of the current message's body still to skip.
    skip: usize,
}

impl StatementCounter {
    /// Feeds `bytes` and returns how many `Execute` and `Query` messages they started.
    pub fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut statements = 0;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let header_len = if self.typed { 5 } else { 8 };
            let n = (header_len - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < header_len {
                break;
            }
            let at = usize::from(self.typed);
            let length = u32::from_be_bytes([
                self.header[at],
                self.header[at + 1],
                self.header[at + 2],
                self.header[at + 3],
            ]) as usize;
            if self.typed {
                if matches!(self.header[0], b'E' | b'Q') {
                    statements += 1;
                }
                self.skip = length.saturating_sub(4);
            } else {
                let code = u32::from_be_bytes([
                    self.header[4],
                    self.header[5],
                    self.header[6],
                    self.header[7],
                ]);
                self.skip = length.saturating_sub(8);
                self.typed = !ENCRYPTION_REQUESTS.contains(&code);
            }
            self.header.clear();
        }
        statements
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn executions_and_queries_are_counted_across_any_split() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&8u32.to_be_bytes());
        stream.extend_from_slice(&80_877_103u32.to_be_bytes());
        stream.extend_from_slice(&12u32.to_be_bytes());
        stream.extend_from_slice(&196_608u32.to_be_bytes());
        stream.extend_from_slice(b"user");
        stream.extend(message(b'p', b"password"));
        stream.extend(message(b'B', b"SSSSS bind with an S inside"));
        stream.extend(message(b'E', b"\0\0\0\0\0"));
        stream.extend(message(b'S', b""));
        stream.extend(message(b'Q', b"SELECT 1\0"));
        stream.extend(message(b'P', b"QQQ"));
        stream.extend(message(b'D', b"EEE"));
        stream.extend(message(b'S', b""));
        stream.extend(message(b'S', b""));
        stream.extend(message(b'E', b"\0\0\0\0\0"));
        stream.extend(message(b'S', b""));
        for split in 1..stream.len() {
            let mut counter = StatementCounter::default();
            let mut counted = 0;
            for chunk in stream.chunks(split) {
                counted += counter.feed(chunk);
            }
            assert_eq!(counted, 3, "chunks of {split}");
        }
    }
}
