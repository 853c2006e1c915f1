//! One Server-Sent Events reader for every test harness: a real HTTP response body read block
//! by block, as the WHATWG `EventSource` parsing rules read it (fields `event`, `id`, `data`,
//! `retry`; a comment line starts with `:`; one optional space after the colon; several
//! `data` lines join with `\n`; LF, CRLF or CR line ends).
//!
//! The harnesses differ in how they wait and what they assert; the bytes are read here once.

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;

/// One event: a block with at least one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event` field; `message` when the block has none.
    pub event: String,
    /// The `id` field, if the block has one.
    pub id: Option<String>,
    /// The `data` lines, joined with `\n`.
    pub data: String,
}

impl Event {
    /// The data as JSON.
    ///
    /// # Panics
    /// If the data is not JSON (a test failure).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }

    /// The version the event's `id` carries (Vexil's ids are environment versions).
    pub fn version(&self) -> Option<u64> {
        self.id.as_deref()?.parse().ok()
    }
}

/// One block of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// An event.
    Event(Event),
    /// A block of comment lines only (keep-alives), their text without the `:` and trimmed,
    /// joined with `\n`.
    Comment(String),
}

/// Parses one block (the text between two blank lines, without them). `None` for a block with
/// neither a field nor a comment.
pub fn parse_block(text: &str) -> Option<Block> {
    let mut event = Event {
        event: "message".to_owned(),
        id: None,
        data: String::new(),
    };
    let (mut fields, mut data_lines) = (0usize, 0usize);
    let mut comments: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix(':') {
            comments.push(comment.trim());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        fields += 1;
        match field {
            "event" => value.clone_into(&mut event.event),
            "id" => event.id = Some(value.to_owned()),
            "data" => {
                if data_lines > 0 {
                    event.data.push('\n');
                }
                event.data.push_str(value);
                data_lines += 1;
            }
            // `retry` and unknown fields carry nothing a test reads.
            _ => {}
        }
    }
    if fields > 0 {
        Some(Block::Event(event))
    } else if !comments.is_empty() {
        Some(Block::Comment(comments.join("\n")))
    } else {
        None
    }
}

/// Reads blocks from a streaming HTTP response.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseReader")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl SseReader {
    /// Reads `response`'s body.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next block, or `None` when the stream ended (or broke off).
    pub async fn next_block(&mut self) -> Option<Block> {
        loop {
            while let Some((end, len)) = block_end(&self.buf) {
                let raw: Vec<u8> = self.buf.drain(..end + len).collect();
                let text = String::from_utf8_lossy(&raw[..end]).into_owned();
                if let Some(block) = parse_block(&text) {
                    return Some(block);
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next event (comment blocks skipped), or `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            match self.next_block().await? {
                Block::Event(e) => return Some(e),
                Block::Comment(_) => {}
            }
        }
    }
}

/// Where the first blank line of `buf` starts, and the length of the line ends that make it.
fn block_end(buf: &[u8]) -> Option<(usize, usize)> {
    [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"]
        .iter()
        .filter_map(|sep| {
            buf.windows(sep.len())
                .position(|w| w == *sep)
                .map(|at| (at, sep.len()))
        })
        .min_by_key(|&(at, _)| at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, id: Option<&str>, data: &str) -> Option<Block> {
        Some(Block::Event(Event {
            event: event.to_owned(),
            id: id.map(str::to_owned),
            data: data.to_owned(),
        }))
    }

    #[test]
    fn blocks_parse_as_eventsource_reads_them() {
        assert_eq!(
            parse_block("event: patch\nid: 7\ndata: {\"a\":1}"),
            event("patch", Some("7"), "{\"a\":1}")
        );
        assert_eq!(
            parse_block("data:x\ndata: y"),
            event("message", None, "x\ny")
        );
        assert_eq!(parse_block("data"), event("message", None, ""));
        assert_eq!(
            parse_block(": keep-alive"),
            Some(Block::Comment("keep-alive".into()))
        );
        assert_eq!(parse_block(":a\nid: 3"), event("message", Some("3"), ""));
        assert_eq!(parse_block(""), None);
    }

    #[test]
    fn blocks_end_at_the_first_blank_line_whatever_the_line_ends() {
        assert_eq!(block_end(b"data: a\n\ndata: b\n\n"), Some((7, 2)));
        assert_eq!(block_end(b"data: a\r\n\r\n"), Some((7, 4)));
        assert_eq!(block_end(b"data: a\r\r"), Some((7, 2)));
        assert_eq!(block_end(b"data: a\n"), None);
    }
}
