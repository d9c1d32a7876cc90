//! Unit tests of the engine: one assertion per rule the module docs state.

mod detect;
mod fold;
mod obfuscated;
mod redact;
mod stream;

use super::*;
use crate::pack::{CustomEntity, PiiDetectorConfig};

pub(super) fn det() -> PiiDetector {
    PiiDetector::compile(&PiiDetectorConfig::default(), None).unwrap()
}

pub(super) fn found(text: &str) -> Vec<(String, String)> {
    let d = det();
    d.find(text)
        .iter()
        .map(|f| {
            (
                d.entity_name(f.entity).to_owned(),
                text[f.start..f.end].to_owned(),
            )
        })
        .collect()
}

pub(super) fn one(text: &str, entity: &str, value: &str) {
    assert_eq!(
        found(text),
        vec![(entity.to_owned(), value.to_owned())],
        "in {text:?}"
    );
}

pub(super) fn none(text: &str) {
    assert_eq!(found(text), vec![], "in {text:?}");
}

pub(super) fn custom(name: &str, regex: Option<&str>, terms: Option<&[&str]>) -> CustomEntity {
    CustomEntity {
        name: name.to_owned(),
        regex: regex.map(str::to_owned),
        terms: terms.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
        validator: None,
        context: None,
    }
}
