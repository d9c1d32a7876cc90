//! The control plane's error body, `{"error": {"code", "message", …}}`, and its closed set of
//! codes. Clients and scripts match on the code, never on the message; a code is added here or
//! not at all.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Every error code the control plane answers with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The wire name (`UNKNOWN_PACK`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

codes! {
    /// The key is missing, malformed, unknown or revoked (401).
    InvalidServiceKey = "INVALID_SERVICE_KEY",
    /// The key's role or scope does not allow this (403).
    Forbidden = "FORBIDDEN",
    NotFound = "NOT_FOUND",
    MethodNotAllowed = "METHOD_NOT_ALLOWED",
    BadRequest = "BAD_REQUEST",
    BodyTooLarge = "BODY_TOO_LARGE",
    BatchTooLarge = "BATCH_TOO_LARGE",
    NoteTooLong = "NOTE_TOO_LONG",
    RequestTimeout = "REQUEST_TIMEOUT",
    /// The pack does not compile; `diagnostics` says where (422).
    PolicyCompileError = "POLICY_COMPILE_ERROR",
    UnknownPack = "UNKNOWN_PACK",
    UnknownPackVersion = "UNKNOWN_PACK_VERSION",
    UnknownEnvironment = "UNKNOWN_ENVIRONMENT",
    UnknownKey = "UNKNOWN_KEY",
    UnknownEscalation = "UNKNOWN_ESCALATION",
    NoDesiredVersion = "NO_DESIRED_VERSION",
    VersionConflict = "VERSION_CONFLICT",
    EnvironmentExists = "ENVIRONMENT_EXISTS",
    LastAdminKey = "LAST_ADMIN_KEY",
    EscalationState = "ESCALATION_STATE",
    AlreadyCurrent = "ALREADY_CURRENT",
    NotInHistory = "NOT_IN_HISTORY",
    NothingToRollBack = "NOTHING_TO_ROLL_BACK",
    /// A deploy's gates refused it; `gates` names each (409).
    DeployRefused = "DEPLOY_REFUSED",
    /// A promotion's gates refused it; `gates` names each (403 or 409).
    PromotionRefused = "PROMOTION_REFUSED",
    ImportRefused = "IMPORT_REFUSED",
    UnsupportedManifestVersion = "UNSUPPORTED_MANIFEST_VERSION",
    ManifestMismatch = "MANIFEST_MISMATCH",
    /// The registry's storage failed; nothing was changed (500).
    StorageError = "STORAGE_ERROR",
    /// The control plane is busy; nothing was changed; send again after `Retry-After` (503).
    Busy = "BUSY",
    Internal = "INTERNAL",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer's `error` member; `gates`, `diagnostics` and `pack` are there when the code
/// carries them, and kept as JSON for the client to show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody<V> {
    pub code: ErrorCode,
    pub message: String,
    #[serde(flatten)]
    pub detail: V,
}

/// The whole error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorAnswer<V> {
    pub error: ErrorBody<V>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_their_wire_names_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert_eq!(serde_json::to_string(c).unwrap(), format!("\"{c}\""));
            assert!(seen.insert(c.as_str()), "{c} twice");
        }
    }
}
