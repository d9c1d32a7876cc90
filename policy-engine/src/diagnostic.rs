//! Diagnostics: every problem a pack has, each with a stable code, a severity, the path of the
//! offending value, its line and column, what was found and what is allowed.
//!
//! Validation never stops at the first problem; it returns a [`Diagnostics`] list. Rendering
//! (rustc-style with a caret, or JSON) lives in `render`, so this module stays data only.
//! A diagnostic never carries the whole document, and a value that looks like a secret is
//! shortened before it is stored in `found`.

use std::fmt;

use serde::Serialize;

/// Stable, machine-readable diagnostic codes. Scripts match on these strings; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiagnosticCode {
    /// The document is not YAML, or not a mapping at the top.
    YamlSyntax,
    /// A field this format version does not know.
    UnknownField,
    /// A required field is absent.
    MissingField,
    /// A value of the wrong type or outside the allowed set.
    InvalidValue,
    /// `format_version` is newer than this build understands.
    UnsupportedPackVersion,
    /// A policy name with no implementation in this build.
    UnknownPolicy,
    /// Settings for a policy that is not in the chain (warning).
    UnusedPolicy,
    /// A reference to an environment the pack does not declare.
    UnknownEnvironment,
    /// An environment override addresses a path that does not exist in the base pack.
    UnknownOverridePath,
    /// Something that looks like a credential written into the pack.
    SecretInPack,
    /// A reference (model → provider, degrade_to → model) that points nowhere.
    UnknownReference,
    /// The pack is well-formed but a policy cannot be built from it (bad regex, …).
    PolicyCompileError,
    /// `enabled: false`: kept in the registry, refused by gateways.
    PackDisabled,
}

impl DiagnosticCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::YamlSyntax => "YAML_SYNTAX",
            Self::UnknownField => "UNKNOWN_FIELD",
            Self::MissingField => "MISSING_FIELD",
            Self::InvalidValue => "INVALID_VALUE",
            Self::UnsupportedPackVersion => "UNSUPPORTED_PACK_VERSION",
            Self::UnknownPolicy => "UNKNOWN_POLICY",
            Self::UnusedPolicy => "UNUSED_POLICY",
            Self::UnknownEnvironment => "UNKNOWN_ENVIRONMENT",
            Self::UnknownOverridePath => "UNKNOWN_OVERRIDE_PATH",
            Self::SecretInPack => "SECRET_IN_PACK",
            Self::UnknownReference => "UNKNOWN_REFERENCE",
            Self::PolicyCompileError => "POLICY_COMPILE_ERROR",
            Self::PackDisabled => "PACK_DISABLED",
        }
    }
}

impl fmt::Display for DiagnosticCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// One problem in a pack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackDiagnostic {
    pub code: DiagnosticCode,
    pub severity: Severity,
    /// Dotted path with `[i]` for list items: `policy.pii-detector.action`, `tests[2].expect`.
    pub path: String,
    /// 1-based; absent when the path has no place in the text (a missing field's parent is used
    /// where possible).
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl PackDiagnostic {
    pub fn error(
        code: DiagnosticCode,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code,
            severity: Severity::Error,
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
            found: None,
            expected: None,
            help: None,
        }
    }

    pub fn warning(
        code: DiagnosticCode,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, path, message)
        }
    }

    #[must_use]
    pub fn found(mut self, found: impl Into<String>) -> Self {
        self.found = Some(found.into());
        self
    }

    #[must_use]
    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    #[must_use]
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for PackDiagnostic {
    /// One line, for logs: `error[INVALID_VALUE] policy.pii-detector.action (12:13): ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}[{}] {}", self.code, self.path)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, " ({l}:{c})")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(found) = &self.found {
            write!(f, "; found `{found}`")?;
        }
        if let Some(expected) = &self.expected {
            write!(f, "; expected {expected}")?;
        }
        Ok(())
    }
}

/// Every diagnostic of one load, errors and warnings together, in document order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<PackDiagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: PackDiagnostic) {
        self.0.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(PackDiagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &PackDiagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &PackDiagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    pub fn iter(&self) -> impl Iterator<Item = &PackDiagnostic> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sort by position so output reads top to bottom; diagnostics without a place go last.
    pub fn sort(&mut self) {
        self.0
            .sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(0)));
    }

    /// The first error, for one-line summaries (`last_reload.error`, a NACK).
    pub fn first_error(&self) -> Option<&PackDiagnostic> {
        self.errors().next()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<PackDiagnostic> for Diagnostics {
    fn from(d: PackDiagnostic) -> Self {
        Self(vec![d])
    }
}

/// Shorten a value that may be a secret so that it can be shown: keep a recognisable prefix.
pub fn redact_secret(value: &str) -> String {
    let prefix: String = value.chars().take(6).collect();
    format!("{prefix}… ({} chars)", value.chars().count())
}
