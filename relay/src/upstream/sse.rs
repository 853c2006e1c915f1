//! An incremental server-sent events parser (the WHATWG "event stream" interpretation),
//! fed raw body chunks as they arrive.
//!
//! Lines end in LF, CRLF or CR (also split across chunks); `data` lines accumulate joined
//! by LF; `event` names the next event; comments and `retry` are ignored (the relay uses its
//! own backoff); an event with no data is not dispatched. The relay tracks its position
//! itself (the hub's versions), so `id` is reported per event rather than remembered.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event` field, `message` if absent.
    pub(crate) event: String,
    /// The `data` lines joined by LF.
    pub(crate) data: String,
    /// The `id` field of this event, if it had one.
    pub(crate) id: Option<String>,
}

/// Why a stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SseError {
    /// A line or an event grew past the limit: a broken or hostile upstream.
    #[error("SSE event larger than {0} bytes")]
    TooLarge(usize),
    /// The stream is not UTF-8.
    #[error("SSE stream is not UTF-8")]
    Utf8,
}

/// Parser state between chunks.
#[derive(Debug)]
pub(crate) struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF in the next one belongs to it.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    /// Largest line or event accepted.
    limit: usize,
}

impl SseParser {
    /// A parser refusing lines or events longer than `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
            id: None,
            limit,
        }
    }

    /// Feeds one chunk; complete events are appended to `out`.
    pub(crate) fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = rest.split_at(pos);
            self.push_line_bytes(head)?;
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out)?;
            self.line = line;
            self.line.clear();
            if tail[0] == b'\r' {
                match tail.get(1) {
                    Some(b'\n') => rest = &tail[2..],
                    Some(_) => rest = &tail[1..],
                    None => {
                        self.after_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &tail[1..];
            }
        }
        self.push_line_bytes(rest)
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.limit {
            return Err(SseError::TooLarge(self.limit));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment (keep-alive)
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::Utf8)?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.data.len() + value.len() + 1 > self.limit {
                    return Err(SseError::TooLarge(self.limit));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        let id = self.id.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
            id,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(Into::into),
        }
    }

    #[test]
    fn parses_events_comments_and_ids() {
        let out = parse_chunks(&[
            b": keep-alive\n\nevent: env-put\nid: p/e:1\ndata: {\"a\":1}\n\nevent: keys\ndata: {}\n\n",
        ]);
        assert_eq!(
            out,
            vec![
                ev("env-put", "{\"a\":1}", Some("p/e:1")),
                ev("keys", "{}", None)
            ]
        );
    }

    #[test]
    fn every_split_point_and_line_ending_gives_the_same_events() {
        let text = b"event: a\r\ndata: 1\r\ndata:2\r\n\r\nevent: b\rdata: x:y\r\rdata\n\n";
        let expected = vec![
            ev("a", "1\n2", None),
            ev("b", "x:y", None),
            ev("message", "", None),
        ];
        for split in 0..=text.len() {
            let (x, y) = text.split_at(split);
            assert_eq!(parse_chunks(&[x, y]), expected, "split at {split}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), expected);
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        assert_eq!(
            parse_chunks(&[b"event: x\nid: 3\n\ndata: y\n\n"]),
            vec![ev("message", "y", None)]
        );
    }

    #[test]
    fn oversized_lines_and_bad_utf8_are_errors() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert_eq!(
            p.feed(b"data: 0123456789abcdef", &mut out),
            Err(SseError::TooLarge(16))
        );
        let mut p = SseParser::new(12);
        assert_eq!(
            p.feed(b"data: 01234\ndata: 56789\ndata: abc\n", &mut out),
            Err(SseError::TooLarge(12))
        );
        let mut p = SseParser::new(64);
        assert_eq!(p.feed(b"data: \xff\n", &mut out), Err(SseError::Utf8));
    }
}
