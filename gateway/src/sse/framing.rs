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

/// Searchers for the fixed needles, built once: `memmem::find` builds one per call, which was
/// ~0.7 % of a streamed request's CPU (several calls per event).
pub(super) static DONE: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"[DONE]"));
static USAGE_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"usage\""));

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

/// The `data:` payload of an event with a single data line (what providers send).
pub(super) fn data_field(event: &[u8]) -> Option<&[u8]> {
    let mut found = None;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            if found.is_some() {
                return None; // multi-line data: pass through untouched
            }
            found = Some(rest.strip_prefix(b" ").unwrap_or(rest));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
