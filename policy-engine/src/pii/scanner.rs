//! The built-in pass: one trigger scan over the text, then per-candidate confirmation.
//!
//! Why this shape: every built-in entity has a cheap, exact trigger — a digit (phone, card, SSN,
//! IBAN check digits, IPv4), `@` (e-mail), `:` (IPv6), an API-key literal (`sk-`, `AKIA`,
//! `ghp_`, …) or a literal of an obfuscated e-mail (`[at]`, `[dot]`, `dot `; see
//! `obfuscated`). Bytes are tested eight at a time (SWAR) for digits, `:` and `@`, and one
//! packed Aho-Corasick automaton (Teddy; see `Literals`) finds the literals, so prose without triggers is
//! skipped at memory speed and no entity runs its own pass over the text.
//!
//! Determinism contract (the stream redactor depends on it): a candidate triggered at `t` reads
//! only bytes in `[max(floor, t - MAX_LEFT) - 4, t + MAX_RIGHT)`, where `floor` is the end of
//! the previous built-in finding, and the scan position only moves forward. Stopping at a
//! `limit` and resuming later therefore yields exactly the findings of one uninterrupted scan.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};

use super::obfuscated::{self, Obfuscation};
use super::{keys, numeric, tokens};

/// How far left of its trigger a built-in candidate may start (e-mail local part, IBAN country
/// code, a `+` or `(` before a phone number).
pub(crate) const MAX_LEFT: usize = 64;
/// How far right of its trigger a built-in candidate may read (e-mail domain: 253 + 2).
pub(crate) const MAX_RIGHT: usize = 260;

/// A finding before overlap resolution, in normalised-text offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) entity: u16,
    /// Which pass found it; breaks ties at equal spans (built-ins win).
    pub(crate) pass: u8,
}

/// Where a pass stands: the next position to look at, and the end of its last finding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PassState {
    pub(crate) pos: usize,
    pub(crate) floor: usize,
}

/// Indexes of the built-in entities, in `BUILTIN_ENTITIES` order.
pub(crate) mod ent {
    pub(crate) const EMAIL: u16 = 0;
    pub(crate) const PHONE: u16 = 1;
    pub(crate) const CARD: u16 = 2;
    pub(crate) const SSN: u16 = 3;
    pub(crate) const IBAN: u16 = 4;
    pub(crate) const IP: u16 = 5;
    pub(crate) const API_KEY: u16 = 6;
}

pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Boundaries: which neighbours glue a candidate to a word (and so make it part of that word,
/// not a value of its own). A letter, a digit or `_` glues; whitespace, start and end of text,
/// and every other ASCII punctuation mark, Unicode punctuation and symbol do not — with three
/// exceptions, each needed to keep redaction idempotent (a second pass over redacted text finds
/// nothing new), and each drawn so that Markdown and brackets still leave a value alone:
///
/// - `*`: a run of four or more `*` glues (a masked value, `****-****`; Markdown never uses
///   more than three), and so does a shorter run that is not an emphasis delimiter — one with
///   a letter, a digit, a mask separator (`-`, `.`, `@`, `:`, `/`) or a replacement's edge
///   (`[`, `{**}`) on its outer side, as in `***-***+44…`. `*x*`, `**x**`, `***x***` at a
///   word's edge do not glue.
/// - `_`: a word character, except a run of at most three at a word's edge (Markdown's `_x_`,
///   `__x__`), whose outer side is whitespace, the text's edge or punctuation.
/// - `]` before and `[` after a value glue (the edges of a placeholder, `[PHONE_1]+44…`); a
///   value inside brackets, `[4111 …]`, is not next to either.
///
/// Every check reads at most eight bytes beyond the candidate (three marks and one character),
/// well inside what the stream redactor keeps as context (`LOOKBEHIND`) and reads ahead.
pub(crate) fn glued_before(hay: &[u8], i: usize) -> bool {
    let Some(b) = i.checked_sub(1).and_then(|k| hay.get(k)).copied() else {
        return false;
    };
    match b {
        b'*' | b'_' => !delimiter_run(hay, i, b, Side::Before),
        b']' => true,
        b => is_word(b),
    }
}

/// The mirror of [`glued_before`] for a candidate ending just before `e`.
pub(crate) fn glued_after(hay: &[u8], e: usize) -> bool {
    let Some(b) = hay.get(e).copied() else {
        return false;
    };
    match b {
        b'*' | b'_' => !delimiter_run(hay, e, b, Side::After),
        b'[' => true,
        b => is_word(b),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Before,
    After,
}

/// Whether the run of `mark` (`*` or `_`) next to a candidate edge at `at` is an emphasis
/// delimiter: one to three marks, with whitespace, the text's edge or punctuation (not a mask
/// separator, for `*`) on their outer side.
fn delimiter_run(hay: &[u8], at: usize, mark: u8, side: Side) -> bool {
    let mut len = 0;
    let outer = loop {
        let k = match side {
            Side::Before => at.checked_sub(len + 1),
            Side::After => Some(at + len),
        };
        match k.and_then(|k| hay.get(k)) {
            Some(&b) if b == mark && len < 4 => len += 1,
            other => break other.copied(),
        }
    };
    if len > 3 {
        return false;
    }
    if mark == b'*' && outer == Some(b' ') && mask_group_beyond(hay, at, len, side) {
        return false;
    }
    if replacement_beyond(hay, at, len, side) {
        return false;
    }
    match outer {
        None => true,
        Some(b) if b.is_ascii_whitespace() => true,
        Some(b'-' | b'.' | b'@' | b':' | b'/') if mark == b'*' => false,
        Some(b) if b.is_ascii_punctuation() => true,
        // Non-ASCII: punctuation and spaces of other scripts (`（`, `「`, NBSP) or letters.
        Some(b) => b >= 0x80 && !utf8_letter_edge(hay, at, len, side),
    }
}

/// Whether, past the space on the outer side of a `*` run, another `*` run stands on its own
/// (whitespace or the text's edge beyond it): the groups of a masked value (`**** **** *`), not
/// the closing or opening delimiter of a neighbouring emphasis (`*a* *b*`), which touches a
/// word. A value redacted with the mask style then stays glued to what it was glued to.
fn mask_group_beyond(hay: &[u8], at: usize, len: usize, side: Side) -> bool {
    match side {
        Side::Before => {
            let Some(space) = at.checked_sub(len + 1) else {
                return false;
            };
            let stars = hay[..space]
                .iter()
                .rev()
                .take_while(|&&b| b == b'*')
                .count();
            stars > 0
                && space
                    .checked_sub(stars + 1)
                    .is_none_or(|k| hay[k].is_ascii_whitespace())
        }
        Side::After => {
            let space = at + len;
            let from = space + 1;
            let stars = hay
                .get(from..)
                .map_or(0, |rest| rest.iter().take_while(|&&b| b == b'*').count());
            stars > 0
                && hay
                    .get(from + stars)
                    .is_none_or(|b| b.is_ascii_whitespace())
        }
    }
}

/// Whether a replacement stands on the outer side of a mark run: a placeholder's edge (`[`
/// after the run, `]` before it), or a bracket with a `*` beyond it (`{**}`, a masked
/// obfuscated e-mail's at marker). The run was then glued to the word the replacement stands
/// for (`sk-…*john[at]x.io` → `sk-…*[EMAIL_1]`), and still is.
fn replacement_beyond(hay: &[u8], at: usize, len: usize, side: Side) -> bool {
    match side {
        Side::Before => {
            let Some(k) = at.checked_sub(len + 1) else {
                return false;
            };
            match hay.get(k) {
                Some(b']') => true,
                Some(b')' | b'}' | b'>') => {
                    k.checked_sub(1).and_then(|j| hay.get(j)) == Some(&b'*')
                }
                _ => false,
            }
        }
        Side::After => match hay.get(at + len) {
            Some(b'[') => true,
            Some(b'(' | b'{' | b'<') => hay.get(at + len + 1) == Some(&b'*'),
            _ => false,
        },
    }
}

/// Whether the non-ASCII character on the outer side of a mark run is a letter or digit.
fn utf8_letter_edge(hay: &[u8], at: usize, len: usize, side: Side) -> bool {
    let c = match side {
        Side::Before => {
            let end = at - len;
            let start = end.saturating_sub(4);
            hay.get(start..end)
                .and_then(|b| {
                    (0..b.len())
                        .find_map(|k| std::str::from_utf8(&b[k..]).ok().filter(|s| !s.is_empty()))
                })
                .and_then(|s| s.chars().next_back())
        }
        Side::After => {
            let start = at + len;
            let end = (start + 4).min(hay.len());
            hay.get(start..end)
                .and_then(|b| {
                    (1..=b.len())
                        .rev()
                        .find_map(|k| std::str::from_utf8(&b[..k]).ok())
                })
                .and_then(|s| s.chars().next())
        }
    };
    c.is_some_and(char::is_alphanumeric)
}

/// Whether a value ending at `e` continues past one separator (`x.C`, `555-123-4567.[T_1]`):
/// the byte after the separator glues like [`glued_after`], and any `*` does — after a
/// separator a `*` is the mask of a value that continued the word (`e::92.*`), which a second
/// pass must read as it read that value.
pub(crate) fn continues_after_separator(hay: &[u8], e: usize) -> bool {
    matches!(hay.get(e + 1), Some(b'*')) || glued_after(hay, e + 1)
}

/// The outcome of confirming one candidate: a finding, and where scanning continues otherwise.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub(crate) found: Option<(usize, usize, u16)>,
    pub(crate) next: usize,
}

impl Step {
    pub(crate) fn miss(next: usize) -> Self {
        Self { found: None, next }
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;
const L127: u64 = LO * 127;

/// Non-zero when some byte of `x` is an ASCII digit, `:` or `@`.
#[inline]
fn swar_trigger(x: u64) -> u64 {
    // Bytes strictly between 0x2F and 0x3B ('0'..=':'), the classic "hasbetween" bit trick;
    // `& !x` drops bytes with the high bit set so UTF-8 never false-triggers.
    let x7 = x & L127;
    let between = (LO * (127 + 0x3B)).wrapping_sub(x7) & !x & x7.wrapping_add(LO * (127 - 0x2F));
    let at = x ^ (LO * u64::from(b'@'));
    let has_at = at.wrapping_sub(LO) & !at;
    (between | has_at) & HI
}

fn is_trigger_byte(b: u8) -> bool {
    matches!(b, b'0'..=b':' | b'@')
}

/// Position of the next digit, `:` or `@` at or after `from`.
pub(crate) fn next_byte_trigger(hay: &[u8], from: usize) -> Option<usize> {
    let rest = hay.get(from..)?;
    let mut chunks = rest.chunks_exact(16);
    let mut base = from;
    for chunk in &mut chunks {
        let (a, b) = chunk.split_at(8);
        let (Ok(a), Ok(b)) = (<[u8; 8]>::try_from(a), <[u8; 8]>::try_from(b)) else {
            break;
        };
        if swar_trigger(u64::from_le_bytes(a)) | swar_trigger(u64::from_le_bytes(b)) != 0 {
            if let Some(i) = chunk.iter().position(|&c| is_trigger_byte(c)) {
                return Some(base + i);
            }
        }
        base += 16;
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|&c| is_trigger_byte(c))
        .map(|i| base + i)
}

/// Bytes a mark check may read past the end of a candidate: one separator, three `*` or `_`
/// and one character of up to four bytes ([`glued_after`] after a separator), plus one.
pub(crate) const GLUE_READ: usize = 9;

/// How far `hay` must reach for the confirmation of the trigger at `t` to be final: the end
/// of the run of bytes its rule may take into a candidate (a superset of what each rule
/// reads, capped where the rule caps its own read), plus the bytes read after it.
/// Confirmations read nothing else to their right, so with `hay` this long the decision equals
/// the decision on any longer text with the same prefix.
fn decided_by(hay: &[u8], t: usize, trig: Trigger) -> usize {
    let run = |from: usize, cap: usize, take: &dyn Fn(u8) -> bool| {
        let mut i = from;
        while i < hay.len() && i - t < cap && hay.get(i).is_some_and(|&b| take(b)) {
            i += 1;
        }
        i
    };
    let end = match trig {
        Trigger::Key(_) => run(t, keys::MAX_BODY + 16, &|b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        }),
        Trigger::Byte(b'@') => run(t + 1, MAX_RIGHT, &|b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
        }),
        Trigger::Byte(b':') => run(t, 64, &|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
        // The obfuscated rule reports how far it read (`obfuscated::Decision::reach`) and is
        // decided by that; this is its cap.
        Trigger::Obfuscated(_) => t + MAX_RIGHT,
        // Digit groups (and an IBAN's capitals) joined by one or two separators; and, for a
        // digit inside a word (an IBAN's check digits are, after its country code), the rest of
        // the word, which the numeric rule skips when no IBAN fits.
        Trigger::Byte(_) => {
            let word = run(t, numeric::MAX_CLUSTER, &|b| is_word(b));
            let cap = numeric::MAX_CLUSTER + 8;
            let group = |b: u8| b.is_ascii_digit() || b.is_ascii_uppercase();
            let sep = |b: u8| matches!(b, b' ' | b'-' | b'.' | b'/' | b'(' | b')');
            let mut i = t;
            loop {
                i = run(i, cap, &group);
                let k = run(i, cap, &sep);
                if k - i > 2 || !hay.get(k).is_some_and(|&b| group(b)) || k - t >= cap {
                    break;
                }
                i = k;
            }
            i.max(word)
        }
    };
    end + GLUE_READ
}

/// The built-in detectors, compiled.
#[derive(Debug)]
pub(crate) struct Builtins {
    enabled: [bool; 7],
    /// Obfuscated e-mail addresses are looked for (`email` on and not turned off).
    obfuscated: bool,
    /// Key literals, then the literals of obfuscated e-mail addresses, in one automaton
    /// (`None` when neither is looked for).
    literals: Option<Literals>,
}

/// The literal automaton and what each of its patterns is.
///
/// One automaton, one packed (Teddy) search over the text: a second automaton for the
/// obfuscation literals cost a second pass (clean prose 3.6 → 2.6 GiB/s). Teddy puts patterns
/// into buckets by the order they are given and their first three bytes' low nibbles, and a
/// bucket that mixes fingerprints matches common trigrams of prose (`hat`, `wor`): the key
/// literals come first, as they always did, and the obfuscation literals after them cost about
/// 5% on clean prose. Putting them first, or dropping `sk-ant-`/`xoxb-`… for shorter shared
/// prefixes, moved the keys' buckets and cost 40% (measured with the automaton alone).
#[derive(Debug)]
struct Literals {
    ac: AhoCorasick,
    kinds: Vec<Trigger>,
}

impl Literals {
    fn new(patterns: &[String], kinds: Vec<Trigger>) -> Result<Self, aho_corasick::BuildError> {
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)?;
        Ok(Self { ac, kinds })
    }

    /// The first literal at or after `from`, and what it is.
    fn find(&self, hay: &[u8], from: usize) -> Option<(usize, Trigger)> {
        let input = Input::new(hay).range(from.min(hay.len())..);
        self.ac.find(input).map(|m| {
            let kind = self.kinds.get(m.pattern().as_usize()).copied();
            (m.start(), kind.unwrap_or(Trigger::Byte(0)))
        })
    }
}

/// The next match of the literal automaton at or after the scan position, kept until the
/// position passes it. Without it, text of literals and no digit (`sk-sk-sk-…`) was searched
/// to its end once per literal: quadratic.
#[derive(Debug, Default, Clone, Copy)]
struct NextLiteral {
    cached: Option<Option<(usize, Trigger)>>,
    from: usize,
}

impl NextLiteral {
    fn get(&mut self, lits: Option<&Literals>, hay: &[u8], pos: usize) -> Option<(usize, Trigger)> {
        let lits = lits?;
        let stale = match self.cached {
            None => true,
            Some(Some((at, _))) => at < pos,
            Some(None) => self.from > pos,
        };
        if stale {
            self.from = pos;
            self.cached = Some(lits.find(hay, pos));
        }
        self.cached.flatten()
    }
}

/// The first trigger at or after the position where [`Builtins::run`] stopped, which the scan
/// has located but not confirmed; `None` when `hay` holds no trigger from there on. It holds
/// for the `hay` the scan ran over only: [`Builtins::future_start`] takes it instead of
/// searching the rest of the text again after every push (the literal automaton alone spent
/// 8% of the stream redactor's time there).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NextTrigger(Option<(usize, Trigger)>);

#[derive(Debug, Clone, Copy)]
enum Trigger {
    Byte(u8),
    Key(usize),
    Obfuscated(Obfuscation),
}

impl Builtins {
    pub(crate) fn new(
        enabled: [bool; 7],
        obfuscated_email: bool,
    ) -> Result<Self, aho_corasick::BuildError> {
        let obfuscated = obfuscated_email && enabled[usize::from(ent::EMAIL)];
        let mut patterns = Vec::new();
        let mut kinds = Vec::new();
        if enabled[usize::from(ent::API_KEY)] {
            for (i, r) in keys::RULES.iter().enumerate() {
                patterns.push(r.prefix.to_owned());
                kinds.push(Trigger::Key(i));
            }
        }
        if obfuscated {
            for (lit, kind) in obfuscated::literals() {
                patterns.push(lit);
                kinds.push(Trigger::Obfuscated(kind));
            }
        }
        let literals = if patterns.is_empty() {
            None
        } else {
            Some(Literals::new(&patterns, kinds)?)
        };
        Ok(Self {
            enabled,
            obfuscated,
            literals,
        })
    }

    fn on(&self, e: u16) -> bool {
        self.enabled.get(usize::from(e)).copied().unwrap_or(false)
    }

    /// Scan triggers at or after `st.pos` that lie before `limit`, appending findings to `out`.
    /// `partial`: `hay` may still grow (a stream); a trigger is then confirmed only once every
    /// byte its decision reads has arrived ([`decided_by`]), and the scan stops at the first one
    /// that is not ready, as it does at `limit`. Returns the first trigger at or after the new
    /// `st.pos`, which both caches below hold when the scan stops.
    pub(crate) fn run(
        &self,
        hay: &[u8],
        st: &mut PassState,
        limit: usize,
        partial: bool,
        out: &mut Vec<Raw>,
    ) -> NextTrigger {
        let want_bytes = self.enabled.iter().take(6).any(|&e| e);
        // The next literal of each automaton and the next trigger byte, each cached until the
        // scan position passes it. Without the byte cache, text of key literals and no digit
        // (`sk-sk-sk-…`) searched to its end once per literal: quadratic.
        let mut next_literal = NextLiteral::default();
        let mut byte_cache: Option<Option<usize>> = None;
        let mut byte_from = 0usize;
        loop {
            let pos = st.pos;
            let byte_t = if want_bytes {
                let stale = match byte_cache {
                    None => true,
                    Some(Some(at)) => at < pos,
                    Some(None) => byte_from > pos,
                };
                if stale {
                    byte_from = pos;
                    byte_cache = Some(next_byte_trigger(hay, pos));
                }
                byte_cache.flatten()
            } else {
                None
            };
            let key_t = next_literal.get(self.literals.as_ref(), hay, pos);
            let (t, trig) = match (byte_t, key_t) {
                (None, None) => {
                    // A key literal cut off by the end of a growing text is found once it is
                    // whole: stop before where it could start.
                    let reach = if partial {
                        limit.saturating_sub(keys::LONGEST_PREFIX - 1)
                    } else {
                        limit
                    };
                    st.pos = pos.max(reach);
                    return NextTrigger(None);
                }
                (Some(b), Some((k, lit))) if k <= b => (k, lit),
                (Some(b), _) => (b, Trigger::Byte(hay.get(b).copied().unwrap_or(0))),
                (None, Some((k, lit))) => (k, lit),
            };
            if t >= limit {
                st.pos = pos.max(limit);
                return NextTrigger(Some((t, trig)));
            }
            let lo = st.floor.max(t.saturating_sub(MAX_LEFT));
            let lo_is_finding = st.floor > 0 && st.floor >= t.saturating_sub(MAX_LEFT);
            let step = if let Trigger::Obfuscated(kind) = trig {
                let d = obfuscated::email(hay, t, kind, lo, lo_is_finding);
                if partial && d.reach > hay.len() {
                    st.pos = t;
                    return NextTrigger(Some((t, trig)));
                }
                d.step
            } else {
                if partial && decided_by(hay, t, trig) > hay.len() {
                    st.pos = t;
                    return NextTrigger(Some((t, trig)));
                }
                self.confirm(hay, t, lo, lo_is_finding, trig)
            };
            match step.found {
                Some((s, e, entity)) => {
                    out.push(Raw {
                        start: s,
                        end: e,
                        entity,
                        pass: 0,
                    });
                    st.floor = e;
                    st.pos = e.max(t + 1);
                }
                None => st.pos = step.next.max(t + 1),
            }
        }
    }

    /// Smallest offset at which a finding the pass has not produced yet can start, given that
    /// it stands at `st` and `hay` may still grow (the stream redactor's early release).
    ///
    /// Every built-in finding starts at its trigger or left of it, and reaches left only over
    /// bytes that are not ASCII whitespace (an e-mail's local part, an IBAN's country code,
    /// an IPv6 address's leading groups, a `+` or `(` before a number) and never below
    /// `max(floor, trigger - MAX_LEFT)`. The next trigger is the first one at or after
    /// `st.pos` in `hay`, or one not received yet (at `hay.len()` or later); a key literal cut
    /// off by the end of `hay` is inside the last word. So no future finding starts before the
    /// word holding that trigger — except an obfuscated e-mail, which reaches left of its
    /// trigger over blanks and up to three words (`obfuscated::start_bound`), may hold that
    /// trigger's word as labels after a bare ` at ` (`before_bare_at`), or may have its trigger
    /// still to come (`cut_off_start`). `next` is what [`run`](Self::run) returned when it
    /// left `st` over this `hay`.
    pub(crate) fn future_start(&self, hay: &[u8], st: &PassState, next: NextTrigger) -> usize {
        let (t, trig) = next
            .0
            .map_or((hay.len(), None), |(t, trig)| (t, Some(trig)));
        let lo = st.floor.max(t.saturating_sub(MAX_LEFT));
        if self.obfuscated {
            if let Some(Trigger::Obfuscated(kind)) = trig {
                return obfuscated::start_bound(hay, t, kind, lo);
            }
            if t == hay.len() {
                return obfuscated::cut_off_start(hay, lo);
            }
        }
        let mut s = t;
        while s > lo && !hay.get(s - 1).is_some_and(u8::is_ascii_whitespace) {
            s -= 1;
        }
        if self.obfuscated {
            return obfuscated::before_bare_at(hay, s, lo);
        }
        s
    }

    fn confirm(&self, hay: &[u8], t: usize, lo: usize, lo_is_finding: bool, trig: Trigger) -> Step {
        match trig {
            Trigger::Key(rule) => keys::confirm(hay, t, rule),
            Trigger::Byte(b'@') if self.on(ent::EMAIL) => tokens::email(hay, t, lo, lo_is_finding),
            Trigger::Byte(b':') if self.on(ent::IP) => tokens::ipv6(hay, t, lo),
            Trigger::Byte(b) if b.is_ascii_digit() => {
                if self.on(ent::IBAN) {
                    if let Some((s, e)) = tokens::iban(hay, t, lo) {
                        return Step {
                            found: Some((s, e, ent::IBAN)),
                            next: e,
                        };
                    }
                }
                let step = numeric::confirm(hay, t, lo);
                match step.found {
                    Some((_, _, e)) if !self.on(e) => Step::miss(step.next),
                    _ => step,
                }
            }
            Trigger::Byte(_) | Trigger::Obfuscated(_) => Step::miss(t + 1),
        }
    }
}
