//! Settings of the `pii-detector` policy. The detector itself lives in `crate::pii`.

use serde::{Deserialize, Serialize};

/// Built-in entity names, exactly as a pack writes them.
pub const BUILTIN_ENTITIES: [&str; 7] = [
    "email",
    "phone",
    "credit_card",
    "ssn",
    "iban",
    "ip_address",
    "api_key",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiDetectorConfig {
    #[serde(default)]
    pub action: PiiAction,
    /// Entities to look for: built-in names and the names of `custom` entities.
    /// Default: every built-in entity plus every custom one.
    #[serde(default)]
    pub entities: Option<Vec<String>>,
    /// Which sides are scanned.
    #[serde(default = "default_scan")]
    pub scan: Vec<ScanSide>,
    #[serde(default)]
    pub redaction: RedactionStyle,
    /// Environment variable holding the HMAC key for `redaction: hash`. Never the key itself.
    #[serde(default)]
    pub hash_key_env: Option<String>,
    #[serde(default)]
    pub custom: Vec<CustomEntity>,
    /// Whether the built-in `email` entity also finds obfuscated addresses (`john [at]
    /// example [dot] com`, `john at example dot com`). Default on; left out of the canonical
    /// form while on, so packs written before the setting keep their hash.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub obfuscated_emails: bool,
}

fn yes() -> bool {
    true
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_yes(b: &bool) -> bool {
    *b
}

impl Default for PiiDetectorConfig {
    fn default() -> Self {
        Self {
            action: PiiAction::default(),
            entities: None,
            scan: default_scan(),
            redaction: RedactionStyle::default(),
            hash_key_env: None,
            custom: Vec::new(),
            obfuscated_emails: true,
        }
    }
}

impl PiiDetectorConfig {
    /// The entity names this policy looks for, after applying the default.
    pub fn effective_entities(&self) -> Vec<String> {
        match &self.entities {
            Some(list) => list.clone(),
            None => BUILTIN_ENTITIES
                .iter()
                .map(|s| (*s).to_owned())
                .chain(self.custom.iter().map(|c| c.name.clone()))
                .collect(),
        }
    }

    pub fn scans(&self, side: ScanSide) -> bool {
        self.scan.contains(&side)
    }
}

fn default_scan() -> Vec<ScanSide> {
    vec![ScanSide::Request, ScanSide::Response]
}

/// What the policy does with a finding. Ordered from loosest to strictest, which is what the
/// semantic diff uses to call a change stricter or looser.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// Pass unchanged, record counts.
    Log,
    /// Pass redacted and mark the event for human review.
    Escalate,
    /// Pass redacted.
    #[default]
    Redact,
    /// Refuse the request; the caller is told the entity types, never the values.
    Block,
}

impl PiiAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Escalate => "escalate",
            Self::Redact => "redact",
            Self::Block => "block",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanSide {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactionStyle {
    /// `[EMAIL_1]`; the same value gets the same placeholder within a request.
    #[default]
    Placeholder,
    /// Every character but separators replaced by `*`; cards keep their last four digits.
    Mask,
    /// `[EMAIL:hmac8]`, a keyed hash (HMAC-SHA-256) so equal values stay linkable.
    Hash,
}

/// A pack-defined entity: a regex (optionally validated and gated by context words) or a
/// literal term list (case-insensitive, word-bounded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomEntity {
    pub name: String,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub terms: Option<Vec<String>>,
    #[serde(default)]
    pub validator: Option<Validator>,
    /// If set, a regex match counts only when one of these words occurs nearby.
    #[serde(default)]
    pub context: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validator {
    Luhn,
    Iban,
    Ssn,
}
