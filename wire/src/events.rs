//! Decision events: one per request, sent by a gateway to `POST /v1/events` in batches.
//!
//! [`DecisionEvent`] is generic over its text type so that each side holds the shape in the form
//! it needs: the gateway serialises events built from shared (`Arc<str>`) and static strings
//! without copying them, the control plane decodes them into `String`s. Unknown fields are
//! ignored on decode, so a newer gateway may send more than an older control plane reads.

use std::collections::BTreeMap;

use std::fmt;

use serde::de::{self, DeserializeOwned, IgnoredAny, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a request ended, in one word: a refusal or failure first (what the caller got), then
/// what policy did to an answered request, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    Redacted,
    Logged,
    Escalated,
    Degraded,
    Blocked,
    BudgetRefused,
    Rejected,
    UpstreamError,
    InternalError,
    Cancelled,
}

impl Outcome {
    /// Every outcome, in the order above.
    pub const ALL: [Self; 11] = [
        Self::Allowed,
        Self::Redacted,
        Self::Logged,
        Self::Escalated,
        Self::Degraded,
        Self::Blocked,
        Self::BudgetRefused,
        Self::Rejected,
        Self::UpstreamError,
        Self::InternalError,
        Self::Cancelled,
    ];

    /// The wire name (`budget_refused`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Redacted => "redacted",
            Self::Logged => "logged",
            Self::Escalated => "escalated",
            Self::Degraded => "degraded",
            Self::Blocked => "blocked",
            Self::BudgetRefused => "budget_refused",
            Self::Rejected => "rejected",
            Self::UpstreamError => "upstream_error",
            Self::InternalError => "internal_error",
            Self::Cancelled => "cancelled",
        }
    }

    /// The outcome named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// A failure of the gateway or its provider (the error rate of a summary).
    pub fn is_error(self) -> bool {
        matches!(self, Self::UpstreamError | Self::InternalError)
    }

    /// A refusal by policy (the block rate of a summary).
    pub fn is_block(self) -> bool {
        matches!(self, Self::Blocked | Self::BudgetRefused)
    }
}

/// PII findings of one request by side: entity → count (never a value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub response: BTreeMap<String, u32>,
}

/// One decision event. `S` is the text of the fields every event of a pack version shares
/// (environment, pack, version, hash, route), `T` the event's own text (request id, models,
/// caller, team, redacted text): a gateway serialises events that borrow both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionEvent<S = String, T = String> {
    pub request_id: T,
    /// Unix milliseconds, the gateway's clock, when the request ended.
    pub at_ms: i64,
    pub environment: S,
    pub pack: S,
    pub version: S,
    pub hash: S,
    pub route: S,
    #[serde(default)]
    pub model_requested: Option<T>,
    #[serde(default)]
    pub model_used: Option<T>,
    #[serde(default)]
    pub caller: Option<T>,
    #[serde(default)]
    pub team: Option<T>,
    pub outcome: Outcome,
    #[serde(default)]
    pub escalated: bool,
    pub status: u16,
    pub latency_us: u64,
    #[serde(default)]
    pub upstream_us: Option<u64>,
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub pii: Findings,
    /// Only when the pack's audit settings put redacted text in the audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_text: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_response_text: Option<T>,
    /// Every call to a provider when there was more than one (retries, fallbacks), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

/// One call to a provider: its deployment (`provider/upstream_model`), how it ended (the HTTP
/// status, or the gateway's error code) and the time to its answer's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub deployment: String,
    pub outcome: String,
    pub ms: u64,
}

/// Most attempts an event may list (the gateway makes at most 10).
pub const MAX_ATTEMPTS: usize = 16;

/// `POST /v1/events` body: the sending gateway's id and its events. `G` and `E` let a sender
/// serialise borrowed data (`Batch<&str, &[DecisionEvent<T>]>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch<G = String, E = Vec<DecisionEvent>> {
    pub gateway: G,
    pub events: E,
}

/// The `Content-Type` of a batch in the rows format ([`RowBatch`]). A batch without it is a
/// [`Batch`].
pub const ROWS_CONTENT_TYPE: &str = "application/vnd.palisade.event-rows+json";
/// The rows format's name in a control plane's registration answer (`event_formats`): a gateway
/// sends rows only to a control plane that listed it, and [`Batch`]es to any other.
pub const ROWS_FORMAT: &str = "rows";

/// The cells of a row, in order. The first [`REQUIRED_CELLS`] are always there; the rest may
/// be left off the end when empty. A reader ignores cells past the last it knows, so a newer
/// gateway may add cells at the end.
pub const ROW_CELLS: [&str; 23] = [
    "request_id",
    "at_ms",
    "environment",
    "pack",
    "version",
    "hash",
    "route",
    "model_requested",
    "model_used",
    "caller",
    "team",
    "outcome",
    "escalated",
    "status",
    "latency_us",
    "upstream_us",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "pii",
    "redacted_text",
    "redacted_response_text",
    "attempts",
];
/// Cells through `pii`.
pub const REQUIRED_CELLS: usize = 20;

/// The text every event of a pack version shares, sent once per rows batch. (The route is
/// not: one gateway serves several at once.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedText<S> {
    pub environment: S,
    pub pack: S,
    pub version: S,
    pub hash: S,
}

impl<S: AsRef<str>> SharedText<S> {
    /// The same text, borrowed.
    pub fn borrowed(&self) -> SharedText<&str> {
        SharedText {
            environment: self.environment.as_ref(),
            pack: self.pack.as_ref(),
            version: self.version.as_ref(),
            hash: self.hash.as_ref(),
        }
    }
}

/// `POST /v1/events` body in the rows format (`Content-Type:` [`ROWS_CONTENT_TYPE`]): each
/// event is an array of its cells in [`ROW_CELLS`] order, with `null` for an environment, pack,
/// version or hash that is the batch's `shared` one. Under two fifths of the object form's
/// bytes for a typical event (no field names, the 64-character hash once), and as much less
/// encoding and compression on the gateway and decoding on the control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowBatch<G, H, R> {
    pub gateway: G,
    /// A [`SharedText`] (borrowed to send).
    pub shared: H,
    pub rows: R,
}

/// One event as a row of a batch whose shared text is `shared`: rows serialised one at a time
/// and joined with commas make a [`RowBatch`]'s `rows`.
#[derive(Debug)]
pub struct Row<'a, S, T> {
    pub shared: &'a SharedText<S>,
    pub event: &'a DecisionEvent<S, T>,
}

/// `v`, or `None` when it is the shared text.
fn own<'a, S: PartialEq>(v: &'a S, shared: &S) -> Option<&'a S> {
    (v != shared).then_some(v)
}

impl<S: Serialize + PartialEq, T: Serialize> Serialize for Row<'_, S, T> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        let (e, shared) = (self.event, self.shared);
        let cells = if !e.attempts.is_empty() {
            23
        } else if e.redacted_response_text.is_some() {
            22
        } else if e.redacted_text.is_some() {
            21
        } else {
            REQUIRED_CELLS
        };
        let mut t = s.serialize_tuple(cells)?;
        t.serialize_element(&e.request_id)?;
        t.serialize_element(&e.at_ms)?;
        t.serialize_element(&own(&e.environment, &shared.environment))?;
        t.serialize_element(&own(&e.pack, &shared.pack))?;
        t.serialize_element(&own(&e.version, &shared.version))?;
        t.serialize_element(&own(&e.hash, &shared.hash))?;
        t.serialize_element(&e.route)?;
        t.serialize_element(&e.model_requested)?;
        t.serialize_element(&e.model_used)?;
        t.serialize_element(&e.caller)?;
        t.serialize_element(&e.team)?;
        t.serialize_element(&e.outcome)?;
        t.serialize_element(&e.escalated)?;
        t.serialize_element(&e.status)?;
        t.serialize_element(&e.latency_us)?;
        t.serialize_element(&e.upstream_us)?;
        t.serialize_element(&e.input_tokens)?;
        t.serialize_element(&e.output_tokens)?;
        t.serialize_element(&e.cost_usd)?;
        t.serialize_element(&e.pii)?;
        if cells > 20 {
            t.serialize_element(&e.redacted_text)?;
        }
        if cells > 21 {
            t.serialize_element(&e.redacted_response_text)?;
        }
        if cells > 22 {
            t.serialize_element(&e.attempts)?;
        }
        t.end()
    }
}

/// One decoded row: the event, with `None` where it takes the batch's shared text (and its
/// route in `route`).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRow<S> {
    pub event: DecisionEvent<Option<S>>,
    pub route: S,
}

impl<S> DecodedRow<S> {
    /// The event, its missing text taken from `shared`.
    pub fn resolve(self, shared: &SharedText<S>) -> DecisionEvent<S>
    where
        S: Clone,
    {
        let (e, route) = (self.event, self.route);
        let or = |v: Option<S>, s: &S| v.unwrap_or_else(|| s.clone());
        DecisionEvent {
            request_id: e.request_id,
            at_ms: e.at_ms,
            environment: or(e.environment, &shared.environment),
            pack: or(e.pack, &shared.pack),
            version: or(e.version, &shared.version),
            hash: or(e.hash, &shared.hash),
            route,
            model_requested: e.model_requested,
            model_used: e.model_used,
            caller: e.caller,
            team: e.team,
            outcome: e.outcome,
            escalated: e.escalated,
            status: e.status,
            latency_us: e.latency_us,
            upstream_us: e.upstream_us,
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cost_usd: e.cost_usd,
            pii: e.pii,
            redacted_text: e.redacted_text,
            redacted_response_text: e.redacted_response_text,
            attempts: e.attempts,
        }
    }
}

impl<'de, S: DeserializeOwned> Deserialize<'de> for DecodedRow<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(RowVisitor(std::marker::PhantomData))
    }
}

struct RowVisitor<S>(std::marker::PhantomData<S>);

/// The next cell (`None` past the end of the row), named in its error.
fn next_cell<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
    i: &mut usize,
) -> Result<Option<T>, A::Error> {
    let name = ROW_CELLS.get(*i).copied().unwrap_or("cell");
    *i += 1;
    seq.next_element()
        .map_err(|e| de::Error::custom(format_args!("{name}: {e}")))
}

impl<'de, S: DeserializeOwned> Visitor<'de> for RowVisitor<S> {
    type Value = DecodedRow<S>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at least {REQUIRED_CELLS} event cells")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut i = 0;
        macro_rules! cell {
            () => {
                match next_cell(&mut seq, &mut i)? {
                    Some(v) => v,
                    None => return Err(de::Error::invalid_length(i - 1, &self)),
                }
            };
        }
        macro_rules! tail {
            () => {
                next_cell(&mut seq, &mut i)?.unwrap_or_default()
            };
        }
        let (request_id, at_ms) = (cell!(), cell!());
        let (environment, pack, version, hash) = (cell!(), cell!(), cell!(), cell!());
        let route = cell!();
        let e = DecisionEvent {
            request_id,
            at_ms,
            environment,
            pack,
            version,
            hash,
            route: None,
            model_requested: cell!(),
            model_used: cell!(),
            caller: cell!(),
            team: cell!(),
            outcome: cell!(),
            escalated: cell!(),
            status: cell!(),
            latency_us: cell!(),
            upstream_us: cell!(),
            input_tokens: cell!(),
            output_tokens: cell!(),
            cost_usd: cell!(),
            pii: cell!(),
            redacted_text: tail!(),
            redacted_response_text: tail!(),
            attempts: {
                let a: Option<Vec<Attempt>> = tail!();
                a.unwrap_or_default()
            },
        };
        // Cells a newer gateway added.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(DecodedRow { event: e, route })
    }
}

/// `POST /v1/events` answer: what ingesting a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingested {
    pub accepted: usize,
    pub duplicates: usize,
    pub escalations_opened: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_by_their_wire_names() {
        for o in Outcome::ALL {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("fine"), None);
    }

    fn event(id: &str, version: &str) -> DecisionEvent {
        DecisionEvent {
            request_id: id.into(),
            at_ms: 1_796_000_000_000,
            environment: "prod".into(),
            pack: "support".into(),
            version: version.into(),
            hash: "9f2b".repeat(16),
            route: "/v1/chat/completions".into(),
            model_requested: Some("gpt-4o-mini".into()),
            model_used: Some("gpt-4o-mini".into()),
            caller: Some("support-bot".into()),
            team: None,
            outcome: Outcome::Redacted,
            escalated: false,
            status: 200,
            latency_us: 1_200,
            upstream_us: Some(1_000),
            input_tokens: Some(42),
            output_tokens: Some(17),
            cost_usd: Some(0.000_016_5),
            pii: Findings {
                request: [("email".to_owned(), 2)].into(),
                response: BTreeMap::new(),
            },
            redacted_text: None,
            redacted_response_text: None,
            attempts: Vec::new(),
        }
    }

    type Decoded = RowBatch<String, SharedText<String>, Vec<DecodedRow<String>>>;

    fn rows_json(events: &[DecisionEvent]) -> String {
        let first = &events[0];
        let shared = SharedText {
            environment: first.environment.clone(),
            pack: first.pack.clone(),
            version: first.version.clone(),
            hash: first.hash.clone(),
        };
        let rows: Vec<_> = events
            .iter()
            .map(|event| Row {
                shared: &shared,
                event,
            })
            .collect();
        serde_json::to_string(&RowBatch {
            gateway: "gw",
            shared: &shared,
            rows,
        })
        .unwrap()
    }

    fn decode(json: &str) -> Result<Vec<DecisionEvent>, serde_json::Error> {
        let b: Decoded = serde_json::from_str(json)?;
        Ok(b.rows.into_iter().map(|r| r.resolve(&b.shared)).collect())
    }

    #[test]
    fn rows_round_trip_with_the_shared_text_once_and_what_differs_in_the_row() {
        let mut other = event("r2", "2.0.0");
        other.redacted_text = Some("mail [EMAIL_1]".into());
        let mut retried = event("r3", "1.0.0");
        retried.attempts = vec![Attempt {
            deployment: "openai/gpt-4o-mini".into(),
            outcome: "503".into(),
            ms: 12,
        }];
        retried.redacted_response_text = Some("ok".into());
        let events = vec![event("r1", "1.0.0"), other, retried];
        let json = rows_json(&events);
        assert_eq!(json.matches(&"9f2b".repeat(16)).count(), 1, "{json}");
        assert!(
            json.contains(r#"["r2",1796000000000,null,null,"2.0.0",null,"/v1/chat/completions","#),
            "{json}"
        );
        assert_eq!(decode(&json).unwrap(), events);
    }

    #[test]
    fn a_row_is_under_two_fifths_of_an_object_event() {
        let events: Vec<_> = (0..100).map(|i| event(&format!("r{i}"), "1.0.0")).collect();
        let rows = rows_json(&events).len();
        let objects = serde_json::to_string(&Batch {
            gateway: "gw",
            events: &events,
        })
        .unwrap()
        .len();
        assert!(
            rows * 5 < objects * 2,
            "rows {rows} bytes, objects {objects}"
        );
    }

    #[test]
    fn cells_a_newer_gateway_added_are_ignored() {
        let json = rows_json(&[event("r1", "1.0.0")]);
        let longer = json.replace(
            r#"{"request":{"email":2}}]"#,
            r#"{"request":{"email":2}},null,null,[],"new"]"#,
        );
        assert_ne!(json, longer);
        assert_eq!(decode(&longer).unwrap(), vec![event("r1", "1.0.0")]);
        // Empty trailing cells may be written as null.
        let nulls = json.replace(
            r#"{"request":{"email":2}}]"#,
            r#"{"request":{"email":2}},null,null,null]"#,
        );
        assert_eq!(decode(&nulls).unwrap(), vec![event("r1", "1.0.0")]);
    }

    #[test]
    fn a_short_row_or_a_bad_cell_is_refused_naming_it() {
        let json = rows_json(&[event("r1", "1.0.0")]);
        let short = json.replace(r#",{"request":{"email":2}}]"#, "]");
        let err = decode(&short).unwrap_err().to_string();
        assert!(err.contains("invalid length 19"), "{err}");
        let bad = json.replace(r#""redacted""#, r#""fine""#);
        let err = decode(&bad).unwrap_err().to_string();
        assert!(err.starts_with("outcome: unknown variant `fine`"), "{err}");
    }

    #[test]
    fn a_borrowed_batch_decodes_as_an_owned_one() {
        let e: DecisionEvent<&str> = DecisionEvent {
            request_id: "r1".into(),
            at_ms: 1,
            environment: "dev",
            pack: "p",
            version: "1.0.0",
            hash: "h",
            route: "/v1/chat/completions",
            model_requested: None,
            model_used: None,
            caller: None,
            team: None,
            outcome: Outcome::BudgetRefused,
            escalated: false,
            status: 429,
            latency_us: 5,
            upstream_us: None,
            input_tokens: None,
            output_tokens: None,
            cost_usd: None,
            pii: Findings::default(),
            redacted_text: None,
            redacted_response_text: None,
            attempts: Vec::new(),
        };
        let events = [e];
        let sent = serde_json::to_string(&Batch {
            gateway: "gw",
            events: &events[..],
        })
        .unwrap();
        assert!(sent.contains("\"outcome\":\"budget_refused\""), "{sent}");
        let got: Batch = serde_json::from_str(&sent).unwrap();
        assert_eq!(got.events[0].environment, "dev");
        assert_eq!(got.events[0].outcome, Outcome::BudgetRefused);
    }
}
