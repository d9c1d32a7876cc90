//! The last good pack on local disk, so a gateway restarted while the control plane is down
//! starts enforcing what it enforced before (`source: persisted`) instead of nothing.
//!
//! Two files in the state directory: `last-good.yaml` (the exact document) and
//! `last-good.json` (`{version, hash}`), each written to a temporary file, fsynced and renamed,
//! YAML first, so a crash leaves either the old pair or the new YAML with the old metadata. On
//! load the document is hashed again and must match the metadata; a mismatch is reported and
//! the persisted pack ignored (the control plane will send the current one).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const YAML: &str = "last-good.yaml";
const META: &str = "last-good.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedMeta {
    pub pack: String,
    pub version: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LastGoodError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LastGoodError + '_ {
    move |source| LastGoodError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Write `yaml` with its metadata atomically into `dir`. Blocking: run off the runtime threads.
pub fn save(dir: &Path, meta: &PersistedMeta, yaml: &str) -> Result<(), LastGoodError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| LastGoodError::Invalid {
        path: dir.join(META),
        message: e.to_string(),
    })?;
    write_atomic(&dir.join(YAML), yaml.as_bytes())?;
    write_atomic(&dir.join(META), &json)?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LastGoodError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        // The rename is durable only once the directory entry is.
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The persisted pack, if there is one whose document still hashes to its metadata.
pub fn load(dir: &Path) -> Result<Option<(PersistedMeta, String)>, LastGoodError> {
    let meta_path = dir.join(META);
    let yaml_path = dir.join(YAML);
    let meta_text = match fs::read(&meta_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&meta_path)(e)),
    };
    let meta: PersistedMeta =
        serde_json::from_slice(&meta_text).map_err(|e| LastGoodError::Invalid {
            path: meta_path.clone(),
            message: e.to_string(),
        })?;
    let yaml = fs::read_to_string(&yaml_path).map_err(io(&yaml_path))?;
    let loaded = policy_engine::load(&yaml).map_err(|d| LastGoodError::Invalid {
        path: yaml_path.clone(),
        message: d.to_string(),
    })?;
    if loaded.hash.to_string() != meta.hash {
        return Err(LastGoodError::Invalid {
            path: yaml_path,
            message: format!(
                "the document hashes to {}, not to the recorded {}",
                loaded.hash, meta.hash
            ),
        });
    }
    Ok(Some((meta, yaml)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: &str = "pack: {name: p, version: 1.0.0}\npolicies: {chain: [audit-logger]}\n";

    fn meta() -> PersistedMeta {
        let hash = policy_engine::load(PACK).unwrap().hash.to_string();
        PersistedMeta {
            pack: "p".to_owned(),
            version: "1.0.0".to_owned(),
            hash,
        }
    }

    #[test]
    fn a_saved_pack_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &meta(), PACK).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some((meta(), PACK.to_owned())));
    }

    #[test]
    fn nothing_persisted_is_none_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_document_edited_on_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &meta(), PACK).unwrap();
        fs::write(dir.path().join(YAML), PACK.replace("1.0.0", "1.0.1")).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not to the recorded"), "{err}");
    }
}
