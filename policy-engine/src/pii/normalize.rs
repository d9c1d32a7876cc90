//! Normalisation before matching: fullwidth forms, invisible characters and exotic spaces.
//!
//! Why: `４１１１ １１１１…` or an e-mail address with zero-width spaces between its letters is
//! the same personal data as its plain form, and evasion by invisible characters is cheap. Text
//! is mapped character by character (fullwidth ASCII U+FF01–FF5E and the small `@` and `.`
//! U+FE6B, U+FE52 → ASCII; NBSP and the U+2000
//! spaces → space; zero-width, bidi marks, word joiner, soft hyphen, BOM and U+FFFD → removed;
//! U+FFFD is what an undecodable JSON escape such as a lone surrogate becomes), and a
//! sparse segment map leads every normalised byte back to the original bytes it came from, so
//! spans are reported on the original text. The mapping is per character, so normalising a
//! prefix gives a prefix of the normalised whole: the stream redactor relies on that.
//!
//! What it does not do: Unicode NFKC in general, homoglyph folding (Cyrillic `а` stays), or
//! case folding. Texts without the lead bytes 0xC2, 0xE2 and 0xEF are returned untouched after
//! one `memchr3` pass, so clean ASCII and most non-Latin prose pay nothing more.

/// A normalised copy of a text and the map from its bytes back to the original.
///
/// The map is sparse: a list of segments, each either a run of unchanged bytes or one mapped
/// character, so building it costs a `memcpy` per run rather than work per byte.
#[derive(Debug)]
pub(crate) struct Normalized {
    pub(crate) text: Vec<u8>,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    norm: usize,
    orig: usize,
    /// 0 for a run of unchanged bytes; otherwise the original length of one mapped character.
    mapped_len: usize,
}

impl Normalized {
    fn segment_of(&self, i: usize) -> Option<&Segment> {
        let k = self.segments.partition_point(|s| s.norm <= i);
        self.segments.get(k.checked_sub(1)?)
    }

    /// Original offset where normalised byte `i` begins (`i == len` maps to the original end).
    pub(crate) fn orig_start(&self, i: usize, orig_len: usize) -> usize {
        if i >= self.text.len() {
            return orig_len;
        }
        start_in(self.segment_of(i), i)
    }

    /// Original offset just after normalised byte `i`.
    pub(crate) fn orig_end(&self, i: usize) -> usize {
        end_in(self.segment_of(i), i)
    }

    /// A mapper for ascending offsets (the findings of one text, in order).
    pub(crate) fn mapper(&self) -> Mapper<'_> {
        Mapper { n: self, k: 0 }
    }

    /// Number of normalised bytes produced by the original text before `orig` (a char boundary).
    pub(crate) fn norm_index_of(&self, orig: usize) -> usize {
        let k = self.segments.partition_point(|s| s.orig < orig);
        let Some(s) = k.checked_sub(1).and_then(|k| self.segments.get(k)) else {
            return orig.min(self.text.len());
        };
        let seg_len = self.segments.get(k).map_or(self.text.len(), |n| n.norm) - s.norm;
        if s.mapped_len > 0 {
            s.norm + seg_len.min(1)
        } else {
            s.norm + (orig - s.orig).min(seg_len)
        }
    }
}

fn start_in(s: Option<&Segment>, i: usize) -> usize {
    match s {
        Some(s) if s.mapped_len > 0 => s.orig,
        Some(s) => s.orig + (i - s.norm),
        None => i,
    }
}

fn end_in(s: Option<&Segment>, i: usize) -> usize {
    match s {
        Some(s) if s.mapped_len > 0 => s.orig + s.mapped_len,
        Some(s) => s.orig + (i - s.norm) + 1,
        None => i + 1,
    }
}

/// Maps normalised offsets to original ones by walking the segments forward, for offsets that
/// mostly ascend: a text's findings in order. PII-dense text with many mapped characters spent
/// 6 % of its scan in a binary search per offset; the walk costs one step per segment passed.
/// An offset behind the walk is searched for, so the answer never depends on the order.
pub(crate) struct Mapper<'n> {
    n: &'n Normalized,
    /// The segment the last offset fell in.
    k: usize,
}

impl Mapper<'_> {
    fn segment(&mut self, i: usize) -> Option<&Segment> {
        let segs = &self.n.segments;
        if segs.get(self.k).is_none_or(|s| s.norm > i) {
            self.k = segs.partition_point(|s| s.norm <= i).checked_sub(1)?;
        }
        while segs.get(self.k + 1).is_some_and(|s| s.norm <= i) {
            self.k += 1;
        }
        segs.get(self.k)
    }

    /// [`Normalized::orig_start`], for the next offset.
    pub(crate) fn orig_start(&mut self, i: usize, orig_len: usize) -> usize {
        if i >= self.n.text.len() {
            return orig_len;
        }
        let s = self.segment(i).copied();
        start_in(s.as_ref(), i)
    }

    /// [`Normalized::orig_end`], for the next offset.
    pub(crate) fn orig_end(&mut self, i: usize) -> usize {
        let s = self.segment(i).copied();
        end_in(s.as_ref(), i)
    }
}

enum Mapped {
    Keep,
    Drop,
    To(u8),
}

fn map_char(c: char) -> Mapped {
    match c {
        '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' => Mapped::To(b' '),
        '\u{00AD}'
        | '\u{200B}'..='\u{200F}'
        | '\u{2060}'..='\u{2064}'
        | '\u{FEFF}'
        | '\u{FFFD}' => Mapped::Drop,
        // Small form variants of `@` and `.` (U+FE6B, U+FE52): `jane﹫example﹒com`.
        '\u{FE6B}' => Mapped::To(b'@'),
        '\u{FE52}' => Mapped::To(b'.'),
        '\u{FF01}'..='\u{FF5E}' => {
            let ascii = u32::from(c) - 0xFEE0;
            u8::try_from(ascii).map_or(Mapped::Keep, Mapped::To)
        }
        _ => Mapped::Keep,
    }
}

/// The characters normalisation changes, in order: (offset, length, mapping).
fn edits(text: &str) -> impl Iterator<Item = (usize, usize, Mapped)> + '_ {
    memchr::memchr3_iter(0xC2, 0xE2, 0xEF, text.as_bytes()).filter_map(move |i| {
        let c = text.get(i..)?.chars().next()?;
        match map_char(c) {
            Mapped::Keep => None,
            m => Some((i, c.len_utf8(), m)),
        }
    })
}

/// Normalise `text`, or `None` when nothing would change (the common case).
pub(crate) fn normalize(text: &str) -> Option<Normalized> {
    let mut edits = edits(text).peekable();
    edits.peek()?;
    let mut out = Normalized {
        text: Vec::with_capacity(text.len()),
        segments: Vec::new(),
    };
    let mut at = 0;
    for (i, len, m) in edits {
        if i > at {
            out.segments.push(Segment {
                norm: out.text.len(),
                orig: at,
                mapped_len: 0,
            });
            out.text
                .extend_from_slice(text.as_bytes().get(at..i).unwrap_or_default());
        }
        if let Mapped::To(b) = m {
            out.segments.push(Segment {
                norm: out.text.len(),
                orig: i,
                mapped_len: len,
            });
            out.text.push(b);
        }
        at = i + len;
    }
    if at < text.len() {
        out.segments.push(Segment {
            norm: out.text.len(),
            orig: at,
            mapped_len: 0,
        });
        out.text
            .extend_from_slice(text.as_bytes().get(at..).unwrap_or_default());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    /// The forward walk answers like the search, for offsets in order, repeated, and going back.
    #[test]
    fn the_mapper_agrees_with_the_search_in_any_order() {
        let text = "a\u{00A0}４１\u{200B}b «x» ｃ\u{FEFF}d—e\u{00AD}ｆ end";
        let n = normalize(text).unwrap();
        let len = n.text.len();
        let ascending: Vec<usize> = (0..len).collect();
        let mut shuffled: Vec<usize> = (0..len)
            .rev()
            .chain(0..len)
            .chain([3, 3, 0, len - 1, 2])
            .collect();
        shuffled.rotate_left(5);
        for order in [ascending, shuffled] {
            let mut m = n.mapper();
            for &i in &order {
                assert_eq!(
                    m.orig_start(i, text.len()),
                    n.orig_start(i, text.len()),
                    "start {i}"
                );
                assert_eq!(m.orig_end(i), n.orig_end(i), "end {i}");
            }
        }
    }
}
