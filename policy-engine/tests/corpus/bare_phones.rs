//! Labelled sentences for bare ten-digit numbers: NANP phone numbers right after a phone word
//! (positives), and the same kind of digits as order, ticket, account and tracking numbers,
//! ids, or after a phone word that is not about them (hard negatives), plus Unix timestamps
//! after a phone word. Every number, positive or not, is a valid NANP number, so only the
//! context decides.
//!
//! Kept apart from `generate`: the property tests name generated texts by seed, and a new
//! draw there would change every one of them.

use super::{disguise, Label, Rng, Sample};

/// `{}` is where the number goes.
const PHONE_FRAMES: &[&str] = &[
    "Call me at {} tomorrow.",
    "Phone: {}",
    "Tel. {} (office)",
    "My mobile number is {}.",
    "You can reach us at {} until 6pm.",
    "Please call {} if anything changes.",
    "Fax {} or send an e-mail.",
    "WhatsApp {} anytime",
    "phone no. {}",
    "Telefon: {}",
    "Meine Handynummer ist {}.",
    "Téléphone : {}",
    "Mon portable : {}",
    "Teléfono: {}",
    "Llámame al {} mañana.",
    "Cellulare: {}",
    "Телефон: {}",
    "電話：{}",
];

const ID_FRAMES: &[&str] = &[
    "Order {} has shipped.",
    "Invoice no. {} is attached.",
    "Ticket {} was closed yesterday.",
    "Account {} is overdue.",
    "Tracking ID {}",
    "Customer number {} in the CRM.",
    "Kundennummer {}",
    "Commande {} expédiée.",
    "Pedido {} enviado.",
    "Call ID {} was logged.",
    "Phone order {} confirmed.",
    "Please call about order {} today.",
    "We will call. {} is your reference.",
    "mobile app build {}",
    "Record {} updated by the call centre.",
    "{}",
];

/// Timestamps after a phone word: context, but not a NANP number.
const TIMESTAMP_FRAMES: &[&str] = &["Call at {}", "Phone: {}", "mobile {} (sync time)"];

fn part(rng: &mut Rng) -> String {
    loop {
        let p = format!("{}{}", 2 + rng.below(8), rng.digits(2));
        if !p.ends_with("11") {
            return p;
        }
    }
}

/// A strict NANP number, ten digits without separators.
pub fn bare_nanp(rng: &mut Rng) -> String {
    let area = loop {
        let a = part(rng);
        if a.as_bytes().get(1) != Some(&b'9') {
            break a;
        }
    };
    format!("{area}{}{}", part(rng), rng.digits(4))
}

/// `n` labelled sentences from `seed`: about half phones, the rest hard negatives.
pub fn bare_phone_samples(seed: u64, n: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let (frame, value, phone) = match rng.below(10) {
                0..=4 => (rng.pick(PHONE_FRAMES), bare_nanp(&mut rng), true),
                5..=8 => (rng.pick(ID_FRAMES), bare_nanp(&mut rng), false),
                _ => {
                    let ts = 1_500_000_000 + rng.below(300_000_000);
                    (rng.pick(TIMESTAMP_FRAMES), ts.to_string(), false)
                }
            };
            let value = disguise(&mut rng, &value);
            let (before, after) = frame.split_once("{}").unwrap_or((frame, ""));
            let labels = if phone {
                vec![Label {
                    entity: "phone",
                    start: before.len(),
                    end: before.len() + value.len(),
                }]
            } else {
                Vec::new()
            };
            Sample {
                text: format!("{before}{value}{after}"),
                labels,
            }
        })
        .collect()
}
