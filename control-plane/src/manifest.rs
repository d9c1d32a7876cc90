//! The export/import manifest: what one environment runs, as a reviewable file (the GitOps path
//! between installations).
//!
//! A manifest is YAML: `format_version`, `exported_at`, `origin` (the URL the export was asked
//! of), `environment`, and per pack its `name`, `version`, `hash` and the exact `yaml` text that
//! was pushed. The text is carried byte for byte (a YAML block scalar where the emitter can
//! represent the text that way, a quoted string otherwise), so a pack imported elsewhere has the
//! same hash and the same comments. Reading checks the format version *before* the shape, so a
//! newer manifest is refused as newer (`UNSUPPORTED_MANIFEST_VERSION`) rather than as malformed.
//! What this module does not do: validate the packs inside (that is import's job, which names the
//! pack that fails) or sign the file (review it like code; its SHA-256 is in the admin log).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest format this build writes and the newest it reads.
pub const FORMAT_VERSION: u64 = 1;

/// A whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u64,
    /// RFC 3339, UTC.
    pub exported_at: String,
    /// Where it was exported from: the control plane's URL as the exporter called it.
    pub origin: String,
    /// The environment whose deployed packs these are.
    pub environment: String,
    pub packs: Vec<ManifestPack>,
}

/// One deployed pack version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestPack {
    pub name: String,
    pub version: String,
    /// The canonical content hash of `yaml` (checked on import).
    pub hash: String,
    /// The pack document exactly as it was pushed.
    pub yaml: String,
}

/// Why a manifest cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest format version {found} is newer than this control plane reads ({FORMAT_VERSION}); upgrade it first")]
    Unsupported { found: u64 },
    #[error("not a manifest: {0}")]
    Invalid(String),
}

const HEADER: &str = "# Palisade manifest: the pack versions one environment runs.\n\
# Import with: palisade import --file FILE --environment ENV [--dry-run] [--replace]\n";

impl Manifest {
    /// Read a manifest (YAML, or JSON, which YAML reads too).
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let raw: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        let found = raw
            .get("format_version")
            .ok_or_else(|| ManifestError::Invalid("`format_version` is missing".to_owned()))?
            .as_u64()
            .filter(|v| *v >= 1)
            .ok_or_else(|| {
                ManifestError::Invalid("`format_version` must be a positive integer".to_owned())
            })?;
        if found > FORMAT_VERSION {
            return Err(ManifestError::Unsupported { found });
        }
        let manifest: Self =
            serde_yaml::from_value(raw).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        let mut names: Vec<&str> = manifest.packs.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ManifestError::Invalid(format!(
                "pack `{}` appears twice; an environment runs one version of a pack",
                w[0]
            )));
        }
        Ok(manifest)
    }

    /// The manifest as the YAML file `palisade export` writes.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        Ok(format!("{HEADER}{}", serde_yaml::to_string(self)?))
    }
}

/// SHA-256 of the manifest file's bytes, in hex: what the admin log records for an import.
pub fn file_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(yaml: &str) -> Manifest {
        Manifest {
            format_version: 1,
            exported_at: "2025-01-01T00:00:00.000Z".to_owned(),
            origin: "http://127.0.0.1:7070".to_owned(),
            environment: "prod".to_owned(),
            packs: vec![ManifestPack {
                name: "support".to_owned(),
                version: "1.0.0".to_owned(),
                hash: "ab".to_owned(),
                yaml: yaml.to_owned(),
            }],
        }
    }

    #[test]
    fn pack_text_survives_the_round_trip_byte_for_byte() {
        let texts = [
            "pack:\n  name: support # the team\n  version: 1.0.0\n",
            "no trailing newline",
            "  leading spaces\nand a tab\there\n",
            "trailing spaces   \n\n\nblank lines\n\n",
            "crlf\r\nline\r\n",
            "unicode: é ü 😀\n",
            "",
        ];
        for text in texts {
            let m = manifest(text);
            let written = m.to_yaml().unwrap();
            assert_eq!(Manifest::parse(&written).unwrap(), m, "{written}");
        }
    }

    #[test]
    fn a_newer_format_is_refused_as_newer_even_with_an_unknown_shape() {
        let text = "format_version: 2\nsomething_new: {}\n";
        assert!(matches!(
            Manifest::parse(text),
            Err(ManifestError::Unsupported { found: 2 })
        ));
    }

    #[test]
    fn malformed_manifests_say_what_is_wrong() {
        for (text, says) in [
            ("packs: []\n", "format_version"),
            ("format_version: x\n", "positive integer"),
            ("format_version: 1\n", "exported_at"),
            ("[1, 2", "not a manifest"),
        ] {
            let e = Manifest::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        let mut m = manifest("a");
        m.packs.push(m.packs[0].clone());
        let e = Manifest::parse(&m.to_yaml().unwrap()).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
    }

    #[test]
    fn the_file_hash_is_sha256_of_the_bytes() {
        assert_eq!(
            file_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
