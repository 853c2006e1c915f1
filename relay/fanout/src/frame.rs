//! Byte-exact SSE frames, encoded once and shared by every subscriber.
//!
//! A frame is `event: NAME\nid: ID\ndata: JSON\n\n`. The JSON comes from `serde_json` in
//! compact form, which escapes every control character inside strings, so it never holds a
//! raw CR or LF; ids are decimal numbers or relay cursors built from validated keys. Each is
//! still checked here, so that no caller can ever inject an SSE line.

use bytes::{BufMut, Bytes, BytesMut};

/// The keep-alive comment: ignored by SSE parsers, keeps proxies from timing out.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Why a frame could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A field held a CR or LF, which would end the SSE line early.
    #[error("SSE {0} contains a line break")]
    LineBreak(&'static str),
}

/// A complete SSE frame and where its `data` payload lies inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
    data_start: usize,
}

impl Frame {
    /// Encodes `event: {event}\nid: {id}\ndata: {data}\n\n`. `data` is written as given (its
    /// parts concatenated), so callers can assemble JSON from cached pieces without copying
    /// twice.
    pub fn encode(event: &str, id: &str, data: &[&[u8]]) -> Result<Self, FrameError> {
        if has_line_break(event.as_bytes()) {
            return Err(FrameError::LineBreak("event name"));
        }
        if has_line_break(id.as_bytes()) {
            return Err(FrameError::LineBreak("id"));
        }
        if data.iter().any(|part| has_line_break(part)) {
            return Err(FrameError::LineBreak("data"));
        }
        let data_len: usize = data.iter().map(|p| p.len()).sum();
        let head_len = "event: ".len() + event.len() + "\nid: ".len() + id.len() + "\ndata: ".len();
        let mut buf = BytesMut::with_capacity(head_len + data_len + 2);
        buf.put_slice(b"event: ");
        buf.put_slice(event.as_bytes());
        buf.put_slice(b"\nid: ");
        buf.put_slice(id.as_bytes());
        buf.put_slice(b"\ndata: ");
        let data_start = buf.len();
        for part in data {
            buf.put_slice(part);
        }
        buf.put_slice(b"\n\n");
        Ok(Self {
            bytes: buf.freeze(),
            data_start,
        })
    }

    /// The whole frame, ready to write to a subscriber.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The `data` payload alone (the JSON), sharing the frame's memory.
    pub fn data(&self) -> Bytes {
        self.bytes.slice(self.data_start..self.bytes.len() - 2)
    }
}

/// The parts of a frame this crate encoded: event name, id and data (sharing `bytes`), or
/// `None` for a comment or anything not in [`Frame::encode`]'s exact form.
pub(crate) fn split(bytes: &Bytes) -> Option<(&str, &str, Bytes)> {
    let rest = bytes.strip_prefix(b"event: ")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let event = std::str::from_utf8(&rest[..nl]).ok()?;
    let rest = rest[nl + 1..].strip_prefix(b"id: ")?;
    let nl2 = rest.iter().position(|&b| b == b'\n')?;
    let id = std::str::from_utf8(&rest[..nl2]).ok()?;
    rest[nl2 + 1..].strip_prefix(b"data: ")?;
    let data_start = "event: ".len() + nl + 1 + "id: ".len() + nl2 + 1 + "data: ".len();
    let end = bytes.len().checked_sub(2)?;
    if data_start > end || &bytes[end..] != b"\n\n" {
        return None;
    }
    Some((event, id, bytes.slice(data_start..end)))
}

fn has_line_break(s: &[u8]) -> bool {
    s.iter().any(|&b| b == b'\n' || b == b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_byte_exact_sse() {
        let f = Frame::encode("patch", "7", &[br#"{"version":7,"#, br#""flag":{}}"#]).unwrap();
        assert_eq!(
            f.bytes().as_ref(),
            b"event: patch\nid: 7\ndata: {\"version\":7,\"flag\":{}}\n\n"
        );
        assert_eq!(f.data().as_ref(), br#"{"version":7,"flag":{}}"#);
    }

    #[test]
    fn line_breaks_are_refused_everywhere() {
        assert_eq!(
            Frame::encode("put", "1\nevent: x", &[b"{}"]),
            Err(FrameError::LineBreak("id"))
        );
        assert_eq!(
            Frame::encode("put\r", "1", &[b"{}"]),
            Err(FrameError::LineBreak("event name"))
        );
        assert_eq!(
            Frame::encode("put", "1", &[b"{}", b"\n\ndata: evil"]),
            Err(FrameError::LineBreak("data"))
        );
    }

    #[test]
    fn serde_json_never_emits_raw_line_breaks() {
        let v = serde_json::json!({"s": "a\nb\r\nc\u{2028}", "k": ["\n"]});
        let json = serde_json::to_vec(&v).unwrap();
        let f = Frame::encode("put", "3", &[&json]).unwrap();
        let text = std::str::from_utf8(f.bytes()).unwrap();
        assert_eq!(text.matches('\n').count(), 4, "{text}");
        assert!(text.ends_with("\n\n"));
    }

    #[test]
    fn split_recovers_the_parts() {
        let f = Frame::encode("patch", "7", &[br#"{"version":7}"#]).unwrap();
        let (event, id, data) = split(f.bytes()).unwrap();
        assert_eq!((event, id), ("patch", "7"));
        assert_eq!(data, f.data());
        assert_eq!(split(&Bytes::from_static(KEEP_ALIVE)), None);
        assert_eq!(
            split(&Bytes::from_static(b"event: x\nid: 1\ndata: {}\n")),
            None
        );
        assert_eq!(split(&Bytes::from_static(b"event: x\ndata: {}\n\n")), None);
    }

    #[test]
    fn keep_alive_is_a_comment() {
        assert!(KEEP_ALIVE.starts_with(b":"));
        assert!(KEEP_ALIVE.ends_with(b"\n\n"));
    }
}
