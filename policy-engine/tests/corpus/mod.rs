//! A seeded generator of labelled text for the accuracy test and the benchmarks.
//!
//! Why our own: accuracy numbers need ground truth that covers every entity in its common and
//! international formats, prose in several languages, evasive spellings (fullwidth digits,
//! zero-width characters, NBSP), and hard negatives that look like PII but are not — Luhn-failing
//! order numbers, dates, times, versions, UUIDs, git SHAs, Unix timestamps, ISBNs, prices,
//! coordinates, invalid SSNs and IBANs. The PRNG is a fixed SplitMix64, so a seed always yields
//! the same corpus on every platform. Seeds are the split: `TUNING_SEED` was used while writing
//! the detector, `HELD_OUT_SEED` only by the accuracy test.
//!
//! Test data, not part of the library: the tests include it with `mod corpus;` and the PII
//! benchmark by path. Not a benchmark of real-world traffic.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "shared test data: each test binary uses a different part"
)]

pub const TUNING_SEED: u64 = 0x5EED_0001;
pub const HELD_OUT_SEED: u64 = 0x5EED_0002;

/// SplitMix64: tiny, fast and good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; returns 0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next_u64() % (n as u64)).unwrap_or(0)
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + (self.below(10) as u8)))
            .collect()
    }

    fn string_of(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n).map(|_| char::from(self.pick(alphabet))).collect()
    }
}

/// One labelled span: `text[start..end]` is an `entity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub entity: &'static str,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub text: String,
    pub labels: Vec<Label>,
}

/// Sentence frames per language; `{}` is where an entity or a hard negative goes.
const FRAMES: &[&str] = &[
    "Please contact me at {} about the invoice.",
    "For the refund, use {} and let me know.",
    "My details: {}. Thanks in advance!",
    "The customer wrote that {} is the right one, see ticket notes",
    "Bitte überweisen Sie an {} bis Freitag.",
    "Meine Angaben lauten {}, vielen Dank.",
    "Merci d'utiliser {} pour la facture.",
    "Mes coordonnées : {} (à jour).",
    "Por favor, usa {} para el pago.",
    "Los datos son «{}» según el cliente.",
    "Per favore contattami su {} domani.",
    "連絡先は{}です。よろしくお願いします。",
    "请使用{}联系我们。",
    "Мои данные: {}, спасибо.",
    "{}",
    "{} — that's all",
];

const FILLER: &[&str] = &[
    "The meeting moved to next week because the team is travelling.",
    "Can you summarise the attached report in three bullet points?",
    "Der Bericht ist fertig, aber die Zahlen müssen noch geprüft werden.",
    "Le client souhaite une réponse rapide concernant sa commande.",
    "El equipo revisará la propuesta durante la próxima reunión.",
    "会議は来週に延期されました。資料を確認してください。",
    "Пожалуйста, проверьте отчёт перед отправкой клиенту.",
    "Translate the following paragraph into formal English, keeping the tone friendly.",
];

mod bare_phones;
mod values;

pub use bare_phones::{bare_nanp, bare_phone_samples};
pub use values::{
    api_key, card, email, hard_negative, iban, ip, obfuscated_email, obfuscated_negative, phone,
    ssn, ENTITY_GENERATORS, EXTRA_GENERATORS,
};

/// Evasive spellings: fullwidth digits, zero-width spaces inside the value, NBSP for spaces.
fn disguise(rng: &mut Rng, value: &str) -> String {
    match rng.below(10) {
        0 => value
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    char::from_u32(u32::from(c) + 0xFEE0).unwrap_or(c)
                } else {
                    c
                }
            })
            .collect(),
        1 => {
            let mut out = String::new();
            for (i, c) in value.chars().enumerate() {
                if i > 0 && i % 3 == 0 {
                    out.push('\u{200B}');
                }
                out.push(c);
            }
            out
        }
        2 => value.replace(' ', "\u{A0}"),
        _ => value.to_owned(),
    }
}

/// `n` labelled samples from `seed`.
pub fn generate(seed: u64, n: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| sample(&mut rng)).collect()
}

fn sample(rng: &mut Rng) -> Sample {
    let mut text = String::new();
    let mut labels = Vec::new();
    if rng.chance(30) {
        text.push_str(rng.pick(FILLER));
        text.push(' ');
    }
    for k in 0..1 + rng.below(3) {
        if k > 0 {
            // Values are separated by more than one space in prose; two numbers with only a
            // space between them are one number to any reader.
            text.push_str(if text.ends_with(char::is_alphanumeric) {
                ". "
            } else {
                " "
            });
        }
        let frame = rng.pick(FRAMES);
        let (before, after) = frame.split_once("{}").unwrap_or((frame, ""));
        text.push_str(before);
        if rng.chance(75) {
            let (entity, generator) = rng.pick(ENTITY_GENERATORS);
            let plain = generator(rng);
            let value = disguise(rng, &plain);
            let start = text.len();
            text.push_str(&value);
            labels.push(Label {
                entity,
                start,
                end: text.len(),
            });
        } else {
            text.push_str(&hard_negative(rng));
        }
        text.push_str(after);
    }
    Sample { text, labels }
}

/// About `bytes` of prose without personal data (for the clean-text benchmarks).
pub fn clean_prose(seed: u64, bytes: usize) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(bytes + 128);
    while out.len() < bytes {
        out.push_str(rng.pick(&FILLER[..2]));
        out.push(' ');
        out.push_str(rng.pick(&[
            "It should be concise, accurate and written for a general audience.",
            "Focus on the main risks, the open questions and the next steps.",
            "Keep the answer short and avoid jargon where possible.",
        ]));
        out.push(' ');
    }
    let mut end = bytes.min(out.len());
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out
}

/// About `bytes` of text in which most sentences carry an entity (the dense benchmark).
pub fn dense(seed: u64, bytes: usize) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(bytes + 256);
    while out.len() < bytes {
        out.push_str(&sample(&mut rng).text);
        out.push('\n');
    }
    out
}
