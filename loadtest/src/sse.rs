//! A minimal, incremental HTTP/1.1 response and Server-Sent Events decoder for thousands of
//! concurrent subscribers: it keeps only what the measurement needs (each event's name and
//! id) and never buffers event data, so a subscriber costs a few bytes beyond its socket.
//!
//! [`ResponseHead::parse`] reads the status line and headers; [`BodyDecoder`] undoes chunked
//! transfer coding (or passes an identity body through) and feeds [`SseParser`], which
//! yields one [`SseEvent`] per dispatched event (comments such as `: keep-alive` are not
//! events).

/// Longest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// Why a response could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The status line or a header is not HTTP/1.x.
    #[error("malformed response head: {0}")]
    Head(String),
    /// The head is longer than [`MAX_HEAD`].
    #[error("response head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    /// A chunk-size line is not hexadecimal or a chunk is not followed by CRLF.
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
}

/// The parts of a response head the load test looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// `Content-Type`, if given.
    pub content_type: Option<String>,
}

impl ResponseHead {
    /// Parses a head from the start of `buf`. `Ok(None)`: incomplete, read more. On success,
    /// also returns the length of the head (the body starts there).
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, DecodeError> {
        let Some(end) = find(buf, b"\r\n\r\n") else {
            return if buf.len() > MAX_HEAD {
                Err(DecodeError::HeadTooLong)
            } else {
                Ok(None)
            };
        };
        let text =
            std::str::from_utf8(&buf[..end]).map_err(|_| DecodeError::Head("not UTF-8".into()))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(DecodeError::Head(format!("status line {status_line:?}")));
        }
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| DecodeError::Head(format!("status line {status_line:?}")))?;
        let mut head = Self {
            status,
            chunked: false,
            content_length: None,
            content_type: None,
        };
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| DecodeError::Head(format!("header line {line:?}")))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value
                    .to_ascii_lowercase()
                    .split(',')
                    .any(|c| c.trim() == "chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                head.content_length = Some(
                    value
                        .parse()
                        .map_err(|_| DecodeError::Head(format!("content-length {value:?}")))?,
                );
            } else if name.eq_ignore_ascii_case("content-type") {
                head.content_type = Some(value.to_owned());
            }
        }
        Ok(Some((head, end + 4)))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Which event a frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `put`: the full state.
    Put,
    /// `patch`: one item created or replaced.
    Patch,
    /// `delete`: one item removed.
    Delete,
    /// `delta`: keys added to and removed from a segment's lists or a flag's targets.
    Delta,
    /// Any other event name.
    Other,
}

/// One dispatched SSE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field.
    pub kind: EventKind,
    /// The `id:` field when it is a decimal number (Vexil's ids are environment versions).
    pub id: Option<u64>,
}

/// Longest line prefix kept: enough for `event:` and `id:` lines; `data:` lines are skipped.
const LINE_PREFIX: usize = 64;

/// Incremental SSE parser (the WHATWG event-stream rules that matter here: `\n`, `\r\n` or
/// `\r` line ends, fields with an optional space after the colon, dispatch on a blank line
/// when data was given, comments ignored).
#[derive(Debug, Default, Clone)]
pub struct SseParser {
    /// The current line's first bytes.
    line: Vec<u8>,
    /// The previous byte was `\r` (so a following `\n` ends nothing more).
    after_cr: bool,
    /// The current event's name.
    kind: Option<EventKind>,
    /// The current event's id.
    id: Option<u64>,
    /// Whether the current event had a `data` field.
    has_data: bool,
}

impl SseParser {
    /// Feeds body bytes, appending every completed event to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(out);
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() < LINE_PREFIX {
                        self.line.push(b);
                    }
                }
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        if self.line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    kind: self.kind.unwrap_or(EventKind::Other),
                    id: self.id,
                });
            }
            self.kind = None;
            self.has_data = false;
            // The id persists across events (last event id), but each Vexil frame sets it.
            self.id = None;
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line[0] != b':' {
            let (name, value) = match line.iter().position(|&c| c == b':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (&line[..], &b""[..]),
            };
            match name {
                b"event" => {
                    self.kind = Some(match value {
                        b"put" => EventKind::Put,
                        b"patch" => EventKind::Patch,
                        b"delete" => EventKind::Delete,
                        b"delta" => EventKind::Delta,
                        _ => EventKind::Other,
                    });
                }
                b"id" => self.id = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()),
                b"data" => self.has_data = true,
                _ => {}
            }
        }
        self.line = line;
        self.line.clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hexadecimal size.
    Size { size: usize, digits: usize },
    /// Skipping chunk extensions up to the line end.
    Extension { size: usize },
    /// Expecting `\n` after the size line's `\r`.
    SizeLf { size: usize },
    /// Inside chunk data.
    Data { left: usize },
    /// Expecting `\r\n` after data (how many of the two bytes are still due).
    DataEnd { left: u8 },
    /// The last chunk was read.
    Done,
}

/// Removes HTTP/1.1 framing from a response body and feeds the payload to an [`SseParser`].
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    /// `None` for an identity body.
    chunk: Option<ChunkState>,
    /// The SSE parser fed with the payload.
    sse: SseParser,
}

impl BodyDecoder {
    /// A decoder for a body with the given head.
    pub fn new(head: &ResponseHead) -> Self {
        let chunk = head
            .chunked
            .then_some(ChunkState::Size { size: 0, digits: 0 });
        Self {
            chunk,
            sse: SseParser::default(),
        }
    }

    /// Whether the terminating zero-size chunk was read (the server ended the stream).
    pub fn finished(&self) -> bool {
        self.chunk == Some(ChunkState::Done)
    }

    /// Feeds raw body bytes, appending completed events to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), DecodeError> {
        let Some(mut state) = self.chunk else {
            self.sse.feed(bytes, out);
            return Ok(());
        };
        while let Some((&b, rest)) = bytes.split_first() {
            state = match state {
                ChunkState::Size { size, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 12 {
                            return Err(DecodeError::Chunk("chunk size too large"));
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as usize;
                        ChunkState::Size {
                            size: size * 16 + d,
                            digits: digits + 1,
                        }
                    }
                    _ if digits == 0 => {
                        return Err(DecodeError::Chunk("chunk size is not hexadecimal"));
                    }
                    b'\r' => ChunkState::SizeLf { size },
                    b'\n' => Self::after_size(size),
                    _ => ChunkState::Extension { size },
                },
                ChunkState::Extension { size } => match b {
                    b'\r' => ChunkState::SizeLf { size },
                    b'\n' => Self::after_size(size),
                    _ => ChunkState::Extension { size },
                },
                ChunkState::SizeLf { size } => {
                    if b != b'\n' {
                        return Err(DecodeError::Chunk("chunk size line not ended by CRLF"));
                    }
                    Self::after_size(size)
                }
                ChunkState::Data { left } => {
                    let take = left.min(bytes.len());
                    self.sse.feed(&bytes[..take], out);
                    bytes = &bytes[take..];
                    state = if take == left {
                        ChunkState::DataEnd { left: 2 }
                    } else {
                        ChunkState::Data { left: left - take }
                    };
                    continue;
                }
                ChunkState::DataEnd { left } => match (left, b) {
                    (2, b'\r') => ChunkState::DataEnd { left: 1 },
                    (_, b'\n') => ChunkState::Size { size: 0, digits: 0 },
                    _ => return Err(DecodeError::Chunk("chunk data not followed by CRLF")),
                },
                // Trailers after the last chunk are ignored.
                ChunkState::Done => ChunkState::Done,
            };
            bytes = rest;
        }
        self.chunk = Some(state);
        Ok(())
    }

    fn after_size(size: usize) -> ChunkState {
        if size == 0 {
            ChunkState::Done
        } else {
            ChunkState::Data { left: size }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
transfer-encoding: chunked\r\ndate: x\r\n\r\n";

    fn frame(event: &str, id: u64, data: &str) -> String {
        format!("event: {event}\nid: {id}\ndata: {data}\n\n")
    }

    fn chunked(payload: &str, sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = payload.as_bytes();
        for &n in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = n.min(rest.len());
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn parses_the_head_and_finds_the_body() {
        let mut buf = HEAD.to_vec();
        buf.extend_from_slice(b"5\r\n");
        assert_eq!(ResponseHead::parse(&HEAD[..20]).unwrap(), None);
        let (head, len) = ResponseHead::parse(&buf).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert!(head.chunked);
        assert_eq!(head.content_type.as_deref(), Some("text/event-stream"));
        assert_eq!(&buf[len..], b"5\r\n");
        let (head, _) =
            ResponseHead::parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 12\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            (head.status, head.content_length, head.chunked),
            (503, Some(12), false)
        );
    }

    #[test]
    fn rejects_bad_heads() {
        assert!(ResponseHead::parse(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(ResponseHead::parse(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(ResponseHead::parse(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
        assert_eq!(
            ResponseHead::parse(&vec![b'a'; MAX_HEAD + 1]),
            Err(DecodeError::HeadTooLong)
        );
    }

    #[test]
    fn decodes_events_split_anywhere_across_chunks_and_reads() {
        let big = "x".repeat(20_000);
        let payload = format!(
            "{}: keep-alive\n\n{}{}{}",
            frame(
                "put",
                7,
                &format!("{{\"version\":7,\"flags\":[\"{big}\"]}}")
            ),
            frame("patch", 8, "{}"),
            frame("delete", 9, "{}"),
            "event: patch\r\nid: 10\r\ndata: {}\r\n\r\n"
        );
        let expected = vec![
            SseEvent {
                kind: EventKind::Put,
                id: Some(7),
            },
            SseEvent {
                kind: EventKind::Patch,
                id: Some(8),
            },
            SseEvent {
                kind: EventKind::Delete,
                id: Some(9),
            },
            SseEvent {
                kind: EventKind::Patch,
                id: Some(10),
            },
        ];
        for sizes in [&[1usize][..], &[3, 7], &[4096], &[100_000]] {
            let body = chunked(&payload, sizes);
            for read in [1usize, 2, 5, 13, 1024, body.len()] {
                let head = ResponseHead::parse(HEAD).unwrap().unwrap().0;
                let mut decoder = BodyDecoder::new(&head);
                let mut out = Vec::new();
                for piece in body.chunks(read) {
                    decoder.feed(piece, &mut out).unwrap();
                }
                assert_eq!(out, expected, "chunks {sizes:?}, reads of {read}");
                assert!(!decoder.finished());
                decoder.feed(b"0\r\n\r\n", &mut out).unwrap();
                assert!(decoder.finished());
            }
        }
    }

    #[test]
    fn identity_bodies_and_odd_fields() {
        let head = ResponseHead {
            status: 200,
            chunked: false,
            content_length: None,
            content_type: None,
        };
        let mut d = BodyDecoder::new(&head);
        let mut out = Vec::new();
        // No data: not dispatched. Unknown event name, non-numeric id, field without colon.
        d.feed(
            b"event: put\nid: 1\n\nevent:custom\nid:abc\ndata\n\nretry: 5\ndata:x\n\n",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                SseEvent {
                    kind: EventKind::Other,
                    id: None
                },
                SseEvent {
                    kind: EventKind::Other,
                    id: None
                },
            ]
        );
    }

    #[test]
    fn rejects_bad_chunking() {
        let head = ResponseHead::parse(HEAD).unwrap().unwrap().0;
        let mut out = Vec::new();
        assert!(BodyDecoder::new(&head).feed(b"zz\r\n", &mut out).is_err());
        assert!(
            BodyDecoder::new(&head)
                .feed(b"2\r\nabXY", &mut out)
                .is_err()
        );
        assert!(BodyDecoder::new(&head).feed(b"2\rX", &mut out).is_err());
        assert!(
            BodyDecoder::new(&head)
                .feed(b"fffffffffffffff\r\n", &mut out)
                .is_err()
        );
        // Extensions are skipped.
        let mut d = BodyDecoder::new(&head);
        d.feed(b"3;ext=1\r\nab\n\r\n", &mut out).unwrap();
    }
}
