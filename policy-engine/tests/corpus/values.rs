//! Generators of entity values in their common and international formats, and of hard
//! negatives — text that looks like personal data but is not. Every value is valid by the
//! rules the detector checks (Luhn and issuer for cards, mod-97 for IBANs, SSA ranges for
//! SSNs) unless it is a negative, which is invalid on purpose.

use super::Rng;

const FIRST: &[&str] = &[
    "jane", "john", "maria", "li", "ahmed", "sofia", "lukas", "chloé", "kenji", "olga",
];
const LAST: &[&str] = &[
    "doe", "smith", "garcia", "wang", "khan", "rossi", "müller", "dubois", "tanaka", "ivanova",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example.co.uk",
    "firma.de",
    "correo.es",
    "univ.edu",
    "post.fr",
    "web.jp",
    "sub.domain.org",
];

fn ascii_name(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphabetic).collect()
}

fn luhn_complete(rng: &mut Rng, prefix: &str, len: usize) -> String {
    let mut d: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    while d.len() < len - 1 {
        d.push(rng.below(10) as u8);
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 0 {
                if x * 2 > 9 {
                    x * 2 - 9
                } else {
                    x * 2
                }
            } else {
                x
            }
        })
        .sum();
    d.push(((10 - sum % 10) % 10) as u8);
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    for &n in sizes {
        if i >= s.len() {
            break;
        }
        out.push(&s[i..(i + n).min(s.len())]);
        i += n;
    }
    out.join(sep)
}

fn nxx(rng: &mut Rng) -> String {
    format!("{}{}", 2 + rng.below(8), rng.digits(2))
}

pub fn email(rng: &mut Rng) -> String {
    let f = ascii_name(rng.pick(FIRST));
    let l = ascii_name(rng.pick(LAST));
    let local = match rng.below(4) {
        0 => format!("{f}.{l}"),
        1 => format!("{f}_{l}{}", rng.digits(2)),
        2 => format!("{}.{l}+news", &f[..1]),
        _ => format!("{f}{}", rng.digits(3)),
    };
    format!("{local}@{}", rng.pick(DOMAINS))
}

/// An obfuscated address: an at marker (bracketed in any of four styles, lower, upper or
/// title case, or the bare word) with zero to two blanks around, and each dot of the domain kept,
/// bracketed or written as the bare word ` dot `. The bare-word `at` form always writes out at
/// least one dot, as the detector's precision guard asks; every domain has a common TLD.
pub fn obfuscated_email(rng: &mut Rng) -> String {
    let f = ascii_name(rng.pick(FIRST));
    let l = ascii_name(rng.pick(LAST));
    let local = match rng.below(3) {
        0 => format!("{f}.{l}"),
        1 => format!("{f}{}", rng.digits(2)),
        _ => f,
    };
    let brackets = [("(", ")"), ("[", "]"), ("{", "}"), ("<", ">")];
    let word = |rng: &mut Rng, w: &str| match rng.below(5) {
        0..=2 => w.to_owned(),
        3 => w.to_ascii_uppercase(),
        _ => format!("{}{}", w[..1].to_ascii_uppercase(), &w[1..]),
    };
    let blanks = |rng: &mut Rng, min: usize| " ".repeat(min + rng.below(3 - min));
    let bare_at = rng.chance(40);
    let at = if bare_at {
        format!("{}{}{}", blanks(rng, 1), word(rng, "at"), blanks(rng, 1))
    } else {
        let (o, c) = rng.pick(&brackets);
        let b = blanks(rng, 0);
        format!("{b}{o}{}{c}{b}", word(rng, "at"))
    };
    let labels: Vec<&str> = rng.pick(DOMAINS).split('.').collect();
    let must_write = if bare_at {
        rng.below(labels.len() - 1)
    } else {
        usize::MAX
    };
    let mut domain = labels[0].to_owned();
    for (k, label) in labels[1..].iter().enumerate() {
        let dot = match rng.below(3) {
            0 if k != must_write => ".".to_owned(),
            1 => format!(" {} ", word(rng, "dot")),
            _ => {
                let (o, c) = rng.pick(&brackets);
                let b = blanks(rng, 0);
                format!("{b}{o}{}{c}{b}", word(rng, "dot"))
            }
        };
        domain.push_str(&dot);
        domain.push_str(label);
    }
    format!("{local}{at}{domain}")
}

/// Prose with `at`, `dot` and bracketed words that is not an address.
pub fn obfuscated_negative(rng: &mut Rng) -> String {
    rng.pick(&[
        "look at the dot product",
        "meet me at home dot",
        "meet at example dot",
        "(at) least one reply",
        "find us at example dot com",
        "the docs are at example.com",
        "we arrived at noon.",
        "John (AT) home",
        "a polka dot at the centre",
        "point at [dot] notation",
    ])
    .to_owned()
}

pub fn phone(rng: &mut Rng) -> String {
    match rng.below(14) {
        0 => format!("({}) {}-{}", nxx(rng), nxx(rng), rng.digits(4)),
        1 => format!("{}-{}-{}", nxx(rng), nxx(rng), rng.digits(4)),
        2 => format!("{}.{}.{}", nxx(rng), nxx(rng), rng.digits(4)),
        3 => format!("+1 {} {} {}", nxx(rng), nxx(rng), rng.digits(4)),
        4 => format!("1-800-{}-{}", nxx(rng), rng.digits(4)),
        5 => format!("+44 20 7946 {}", rng.digits(4)),
        6 => format!("07700 900{}", rng.digits(3)),
        7 => {
            let n = 7 + rng.below(2);
            format!("+49 30 {}", rng.digits(n))
        }
        8 => format!("+49 (0)30 {}", rng.digits(7)),
        9 => format!(
            "01 {} {} {} {}",
            rng.digits(2),
            rng.digits(2),
            rng.digits(2),
            rng.digits(2)
        ),
        10 => format!(
            "+33 {} {} {} {} {}",
            1 + rng.below(9),
            rng.digits(2),
            rng.digits(2),
            rng.digits(2),
            rng.digits(2)
        ),
        11 => format!("+81 3-{}-{}", rng.digits(4), rng.digits(4)),
        12 => format!("+91 9{} {}", rng.digits(4), rng.digits(5)),
        _ => format!("+55 11 9{}-{}", rng.digits(4), rng.digits(4)),
    }
}

pub fn card(rng: &mut Rng) -> String {
    let (num, amex) = match rng.below(5) {
        0 => (luhn_complete(rng, "4", 16), false),
        1 => {
            let p = format!("5{}", 1 + rng.below(5));
            (luhn_complete(rng, &p, 16), false)
        }
        2 => {
            let p = rng.pick(&["34", "37"]);
            (luhn_complete(rng, p, 15), true)
        }
        3 => (luhn_complete(rng, "6011", 16), false),
        _ => {
            let p = format!("35{}", 28 + rng.below(62));
            (luhn_complete(rng, &p, 16), false)
        }
    };
    let sizes: &[usize] = if amex { &[4, 6, 5] } else { &[4, 4, 4, 4] };
    match rng.below(3) {
        0 => group(&num, sizes, " "),
        1 => group(&num, sizes, "-"),
        _ => num,
    }
}

pub fn ssn(rng: &mut Rng) -> String {
    let area = loop {
        let a = 1 + rng.below(899);
        if a != 666 {
            break a;
        }
    };
    let sep = if rng.chance(80) { "-" } else { " " };
    format!(
        "{area:03}{sep}{:02}{sep}{:04}",
        1 + rng.below(99),
        1 + rng.below(9999)
    )
}

/// (country, BBAN layout: `n` digit, `a` capital letter)
const IBAN_LAYOUTS: &[(&str, &str)] = &[
    ("DE", "nnnnnnnnnnnnnnnnnn"),
    ("GB", "aaaannnnnnnnnnnnnn"),
    ("FR", "nnnnnnnnnnnnnnnnnnnnnnn"),
    ("ES", "nnnnnnnnnnnnnnnnnnnn"),
    ("IT", "annnnnnnnnnnnnnnnnnnnnn"),
    ("NL", "aaaannnnnnnnnn"),
    ("CH", "nnnnnnnnnnnnnnnnn"),
    ("BE", "nnnnnnnnnnnn"),
    ("AT", "nnnnnnnnnnnnnnnn"),
    ("PL", "nnnnnnnnnnnnnnnnnnnnnnnn"),
];

fn iban_check(cc: &str, bban: &str) -> u32 {
    let s = format!("{bban}{cc}00");
    let mut rem = 0u32;
    for c in s.bytes() {
        rem = if c.is_ascii_digit() {
            (rem * 10 + u32::from(c - b'0')) % 97
        } else {
            (rem * 100 + u32::from(c - b'A') + 10) % 97
        };
    }
    98 - rem
}

fn iban_parts(rng: &mut Rng) -> (String, String) {
    let (cc, layout) = rng.pick(IBAN_LAYOUTS);
    let bban: String = layout
        .bytes()
        .map(|k| {
            if k == b'n' {
                char::from(b'0' + rng.below(10) as u8)
            } else {
                char::from(b'A' + rng.below(26) as u8)
            }
        })
        .collect();
    (cc.to_owned(), bban)
}

pub fn iban(rng: &mut Rng) -> String {
    let (cc, bban) = iban_parts(rng);
    let compact = format!("{cc}{:02}{bban}", iban_check(&cc, &bban));
    if rng.chance(50) {
        group(&compact, &[4; 9], " ")
    } else {
        compact
    }
}

pub fn ip(rng: &mut Rng) -> String {
    let h = |rng: &mut Rng| format!("{:x}", rng.below(0x10000));
    match rng.below(4) {
        0 | 1 => format!(
            "{}.{}.{}.{}",
            1 + rng.below(223),
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        ),
        2 => format!(
            "2001:db8:{}:{}::{}:{}",
            h(rng),
            h(rng),
            h(rng),
            rng.below(9000) + 1000
        ),
        _ => {
            let mut groups: Vec<String> = (0..8)
                .map(|_| format!("{:x}", rng.below(0x10000)))
                .collect();
            // A real address practically always has a decimal digit somewhere.
            groups[1] = format!("{}", 1 + rng.below(9));
            groups.join(":")
        }
    }
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub fn api_key(rng: &mut Rng) -> String {
    let k = match rng.below(9) {
        0 => format!("sk-{}", rng.string_of(B64, 48)),
        1 => format!("sk-proj-{}", rng.string_of(B64, 64)),
        2 => format!("sk-ant-api03-{}", rng.string_of(B64, 80)),
        3 => format!(
            "AKIA{}",
            rng.string_of(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
        ),
        4 => format!("ghp_{}", rng.string_of(B64, 36)),
        5 => format!(
            "github_pat_{}_{}",
            rng.string_of(B64, 22),
            rng.string_of(B64, 59)
        ),
        6 => format!(
            "xoxb-{}-{}-{}",
            rng.digits(11),
            rng.digits(12),
            rng.string_of(B64, 24)
        ),
        7 => {
            let p = rng.pick(&["sk", "rk"]);
            format!("{p}_live_{}", rng.string_of(B64, 24))
        }
        _ => format!("AIza{}", rng.string_of(B64, 35)),
    };
    // Random bodies may lack a digit; real keys practically never do.
    if k.bytes().any(|b| b.is_ascii_digit()) {
        k
    } else {
        format!("{}7", &k[..k.len() - 1])
    }
}

/// Text that looks like PII but is not.
pub fn hard_negative(rng: &mut Rng) -> String {
    let hex = b"0123456789abcdef";
    match rng.below(24) {
        16 => format!(
            "tracking 9400 1{} {} {} {} {}",
            rng.digits(3),
            rng.digits(4),
            rng.digits(4),
            rng.digits(4),
            rng.digits(2)
        ),
        17 => format!("ref {}", rng.digits(9)),
        18 => (0..6)
            .map(|_| rng.string_of(b"0123456789ABCDEF", 2))
            .collect::<Vec<_>>()
            .join(":"),
        19 => format!(
            "{}.{}.{}.{}",
            256 + rng.below(700),
            rng.below(256),
            rng.below(256),
            rng.below(256)
        ),
        20 => format!(
            "pages {}-{} of {}",
            rng.below(100),
            100 + rng.below(100),
            rng.digits(4)
        ),
        21 => format!(
            "sk-learn-the-basics-{}",
            rng.pick(&["today", "fast", "now"])
        ),
        22 => format!("{}:{:02} PM", 1 + rng.below(12), rng.below(60)),
        23 => {
            let n = luhn_complete(rng, "9", 16);
            format!("gift card {n}")
        }
        0 => {
            let mut n = luhn_complete(rng, "4", 16);
            let last = n.pop().map_or(0, |c| c as u8 - b'0');
            format!("order {n}{}", (last + 1) % 10)
        }
        1 => format!(
            "{}-{:02}-{:02}",
            2000 + rng.below(30),
            1 + rng.below(12),
            1 + rng.below(28)
        ),
        2 => format!(
            "{:02}/{:02}/{}",
            1 + rng.below(28),
            1 + rng.below(12),
            2000 + rng.below(30)
        ),
        3 => format!(
            "{:02}:{:02}:{:02}",
            rng.below(24),
            rng.below(60),
            rng.below(60)
        ),
        4 => format!("v{}.{}.{}", rng.below(10), rng.below(30), rng.below(100)),
        5 => format!("10.0.{}.{}", 10000 + rng.below(9000), rng.below(3000)),
        6 => [8, 4, 4, 4, 12]
            .iter()
            .map(|&n| rng.string_of(hex, n))
            .collect::<Vec<_>>()
            .join("-"),
        7 => format!("commit {}", rng.string_of(hex, 40)),
        8 => format!("{}", 1_500_000_000 + rng.below(300_000_000)),
        9 => format!(
            "ISBN 978-{}-{}-{}-{}",
            rng.below(10),
            rng.digits(2),
            rng.digits(6),
            rng.below(10)
        ),
        10 => format!(
            "${},{}.{:02}",
            1 + rng.below(999),
            rng.digits(3),
            rng.below(100)
        ),
        11 => format!(
            "{}.{:04}, {}.{:04}",
            rng.below(90),
            rng.below(10000),
            rng.below(180),
            rng.below(10000)
        ),
        12 => {
            let a = rng.pick(&["000", "666", "912"]);
            format!("{a}-{}-{}", rng.digits(2), rng.digits(4))
        }
        13 => {
            let (cc, bban) = iban_parts(rng);
            let check = (iban_check(&cc, &bban) + 1 + rng.below(90) as u32) % 97 + 2;
            format!("{cc}{check:02}{bban}")
        }
        14 => format!("ticket #{}", rng.digits(10)),
        _ => format!("{}%", rng.below(100)),
    }
}

type Gen = fn(&mut Rng) -> String;

/// Generators of values the property tests use beyond [`ENTITY_GENERATORS`] (which the
/// accuracy corpus draws from): obfuscated e-mail addresses.
pub const EXTRA_GENERATORS: &[(&str, Gen)] = &[("email", obfuscated_email)];

pub const ENTITY_GENERATORS: &[(&str, Gen)] = &[
    ("email", email),
    ("phone", phone),
    ("credit_card", card),
    ("ssn", ssn),
    ("iban", iban),
    ("ip_address", ip),
    ("api_key", api_key),
];
