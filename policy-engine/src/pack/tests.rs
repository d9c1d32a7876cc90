//! `tests:` in a pack: request text and the decision the compiled pack must reach.
//! `palisade test` runs them, and promotion requires them to pass.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackTest {
    pub name: String,
    /// Shorthand for a single user message.
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub messages: Vec<TestMessage>,
    /// The chain's decision on the request.
    pub expect: TestVerdict,
    /// For `redact`, `block` and `escalate`: exactly which entity types must be found.
    #[serde(default)]
    pub entities: Option<Vec<String>>,
    /// Expected request text after redaction, when the author wants to pin it.
    #[serde(default)]
    pub redacted: Option<String>,
    /// Environments this test applies to (default: all). Lets a pack state that dev only logs
    /// what prod blocks, and have both checked.
    #[serde(default)]
    pub environments: Option<Vec<String>>,
}

impl PackTest {
    /// Whether the test applies when the pack is resolved for `environment`.
    pub fn applies_to(&self, environment: Option<&str>) -> bool {
        match (&self.environments, environment) {
            (None, _) => true,
            (Some(list), Some(env)) => list.iter().any(|e| e == env),
            (Some(_), None) => false,
        }
    }

    /// Every text of the test's request, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.input
            .as_deref()
            .into_iter()
            .chain(self.messages.iter().map(|m| m.content.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestMessage {
    #[serde(default = "user")]
    pub role: String,
    pub content: String,
}

fn user() -> String {
    "user".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestVerdict {
    Allow,
    Redact,
    Block,
    /// Passed redacted and marked for review.
    Escalate,
    /// Passed unchanged, findings recorded.
    Log,
}

impl TestVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Redact => "redact",
            Self::Block => "block",
            Self::Escalate => "escalate",
            Self::Log => "log",
        }
    }
}
