//! Server-sent events in a provider's bytes: where an event ends (`\n\n` or `\r\n\r\n`),
//! its `data` field, and the two needles the relay looks for without parsing (`[DONE]`, a
//! `"usage"` object).

use std::sync::LazyLock;

use memchr::memmem;

/// An event larger than this is a broken stream, not something to buffer.
pub(super) const MAX_EVENT_BYTES: usize = 1 << 20;

/// Whether a `"usage"` key with an object value occurs (`"usage":null`, which providers put on
/// every chunk once usage is requested, does not count; nor does the word in content text,
/// where the quotes would be escaped).
pub(super) fn has_usage_object(data: &[u8]) -> bool {
    USAGE_KEY.find_iter(data).any(|i| {
        let rest = &data[i + 7..];
        let rest = rest.trim_ascii_start();
        rest.strip_prefix(b":")
            .is_some_and(|r| r.trim_ascii_start().starts_with(b"{"))
    })
}

/// Whether a `"finish_reason"` key with a string value occurs (not `null`, which chat chunks
/// carry until the last one).
pub(super) fn has_finish_reason(data: &[u8]) -> bool {
    FINISH_KEY.find_iter(data).any(|i| {
        let rest = data[i + 15..].trim_ascii_start();
        rest.strip_prefix(b":")
            .is_some_and(|r| r.trim_ascii_start().starts_with(b"\""))
    })
}

/// Searchers for the fixed needles, built once: `memmem::find` builds one per call, which was
/// ~0.7 % of a streamed request's CPU (several calls per event).
pub(super) static DONE: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"[DONE]"));
static USAGE_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
static FINISH_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"finish_reason\""));

/// End of the first complete event (after its blank line: `\n\n` or `\r\n\r\n`), in one pass
/// over the line feeds. The first line feed that ends a `\r\n\r\n` or starts a `\n\n` gives
/// the earliest end: a `\r\n\r\n` ending at a later line feed `j` ends at `j + 1`, never
/// before the `\n\n` at `i < j` ends (`i + 2`), since `j = i + 1` would need a `\r` at `i`.
pub(super) fn event_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|i| {
        if i >= 3 && &buf[i - 3..i] == b"\r\n\r" {
            Some(i + 1)
        } else if buf.get(i + 1) == Some(&b'\n') {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// [`event_end`] for a buffer whose first `searched` bytes held no event end the last time it
/// was searched: only the new bytes (and the three before them, where a `\r\n\r` may end) are
/// looked at, so a stream that arrives a byte at a time is not searched again from its start.
pub(super) fn event_end_after(buf: &[u8], searched: usize) -> Option<usize> {
    let from = searched.saturating_sub(3).min(buf.len());
    event_end(&buf[from..]).map(|end| end + from)
}

/// An event's `data` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Data<'a> {
    /// No data line: a comment, or only `event:`/`id:`/`retry:` fields.
    None,
    /// One data line (what providers send).
    One(&'a [u8]),
    /// Several data lines, which SSE joins with line feeds: text that cannot be edited in place.
    Many,
}

/// The `data` field of an event.
pub(super) fn data_lines(event: &[u8]) -> Data<'_> {
    let mut found = Data::None;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line
            .strip_prefix(b"data:")
            .or_else(|| (line == b"data").then_some(&b""[..]))
        {
            if found != Data::None {
                return Data::Many;
            }
            found = Data::One(rest.strip_prefix(b" ").unwrap_or(rest));
        }
    }
    found
}

/// The `data:` payload of an event with a single data line.
#[cfg(test)]
pub(super) fn data_field(event: &[u8]) -> Option<&[u8]> {
    match data_lines(event) {
        Data::One(d) => Some(d),
        _ => None,
    }
}

/// Turn every carriage return of `buf[from..]` that is not followed by a line feed into a line
/// feed (SSE allows CR, LF or CRLF as line ends; the framing here reads LF and CRLF). A CR in
/// the last byte may still be the start of a CRLF: it is left, and the returned offset says
/// where to look again once more bytes arrived.
pub(super) fn normalize_lone_cr(buf: &mut [u8], from: usize) -> usize {
    let mut i = from;
    while let Some(at) = memchr::memchr(b'\r', &buf[i..]) {
        let at = i + at;
        match buf.get(at + 1) {
            None => return at,
            Some(b'\n') => {}
            Some(_) => buf[at] = b'\n',
        }
        i = at + 1;
    }
    buf.len()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Normalising in pieces, as frames arrive, gives what normalising the whole does: every
        /// lone CR becomes LF and CRLF stays.
        #[test]
        fn lone_carriage_returns_become_line_feeds_in_any_split(
            buf in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..40),
            at in 0usize..40,
        ) {
            let at = at.min(buf.len());
            let mut whole = buf.clone();
            let end = normalize_lone_cr(&mut whole, 0);
            if end < whole.len() {
                whole[end] = b'\n'; // the stream ended on a CR
            }
            let mut parts = buf[..at].to_vec();
            let from = normalize_lone_cr(&mut parts, 0);
            parts.extend_from_slice(&buf[at..]);
            let end = normalize_lone_cr(&mut parts, from);
            if end < parts.len() {
                parts[end] = b'\n';
            }
            prop_assert_eq!(&parts, &whole);
            prop_assert!(!whole.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'));
        }
    }

    /// The definition `event_end` implements in one pass: the earlier of the first `\n\n` and
    /// the first `\r\n\r\n`.
    fn event_end_by_two_searches(buf: &[u8]) -> Option<usize> {
        let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
        let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
        match (lf, crlf) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    proptest! {
        #[test]
        fn event_end_finds_the_earliest_blank_line(
            buf in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..40)
        ) {
            prop_assert_eq!(super::event_end(&buf), event_end_by_two_searches(&buf));
        }
    }
}
