//! Normalisation before matching: fullwidth forms, invisible characters and exotic spaces.
//!
//! Why: `４１１１ １１１１…` or an e-mail address with zero-width spaces between its letters is
//! the same personal data as its plain form, and evasion by invisible characters is cheap. Text
//! is mapped character by character (fullwidth ASCII U+FF01–FF5E → ASCII; NBSP and the U+2000
//! spaces → space; zero-width, bidi marks, word joiner, soft hyphen, BOM → removed), and every
//! normalised byte remembers the original byte range it came from so spans are reported on the
//! original text. The mapping is per character, so normalising a prefix gives a prefix of the
//! normalised whole: the stream redactor relies on that.
//!
//! What it does not do: Unicode NFKC in general, homoglyph folding (Cyrillic `а` stays), or
//! case folding. Texts without the lead bytes 0xC2, 0xE2 and 0xEF are returned untouched after
//! one `memchr3` pass, so clean ASCII and most non-Latin prose pay nothing more.

/// A normalised copy of a text plus, per normalised byte, the original byte range it came from.
#[derive(Debug)]
pub(crate) struct Normalized {
    pub(crate) text: Vec<u8>,
    starts: Vec<u32>,
    ends: Vec<u32>,
}

impl Normalized {
    /// Original offset where normalised byte `i` begins (`i == len` maps to the original end).
    pub(crate) fn orig_start(&self, i: usize, orig_len: usize) -> usize {
        self.starts.get(i).map_or(orig_len, |&s| s as usize)
    }

    /// Original offset just after normalised byte `i`.
    pub(crate) fn orig_end(&self, i: usize) -> usize {
        self.ends.get(i).map_or(0, |&e| e as usize)
    }

    /// Number of normalised bytes produced by the original text before `orig` (a char boundary).
    pub(crate) fn norm_index_of(&self, orig: usize) -> usize {
        self.starts.partition_point(|&s| (s as usize) < orig)
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
        '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' => Mapped::Drop,
        '\u{FF01}'..='\u{FF5E}' => {
            let ascii = u32::from(c) - 0xFEE0;
            u8::try_from(ascii).map_or(Mapped::Keep, Mapped::To)
        }
        _ => Mapped::Keep,
    }
}

/// Whether `text` may contain a character that normalisation changes. Cheap: one `memchr3`.
pub(crate) fn may_need(text: &[u8]) -> bool {
    memchr::memchr3(0xC2, 0xE2, 0xEF, text).is_some()
}

/// Normalise `text`, or `None` when nothing would change (the common case).
pub(crate) fn normalize(text: &str) -> Option<Normalized> {
    if !may_need(text.as_bytes()) {
        return None;
    }
    if !text.chars().any(|c| !matches!(map_char(c), Mapped::Keep)) {
        return None;
    }
    let mut out = Normalized {
        text: Vec::with_capacity(text.len()),
        starts: Vec::with_capacity(text.len()),
        ends: Vec::with_capacity(text.len()),
    };
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        // Offsets are u32: a single text over 4 GiB is far beyond any request body limit, and
        // saturating keeps spans in range rather than wrapping.
        let (s32, e32) = (sat_u32(i), sat_u32(end));
        match map_char(c) {
            Mapped::Drop => {}
            Mapped::To(b) => {
                out.text.push(b);
                out.starts.push(s32);
                out.ends.push(e32);
            }
            Mapped::Keep => {
                let mut tmp = [0u8; 4];
                for (k, &b) in c.encode_utf8(&mut tmp).as_bytes().iter().enumerate() {
                    out.text.push(b);
                    out.starts.push(sat_u32(i + k));
                    out.ends.push(sat_u32(i + k + 1));
                }
            }
        }
    }
    Some(out)
}

fn sat_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}
