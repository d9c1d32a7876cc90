//! Turning a `PiiDetectorConfig` into compiled passes, collecting every diagnostic.
//!
//! Why a separate stage: a pack is compiled off the hot path, and an operator fixing a pack
//! wants all of its mistakes at once, each with a path relative to the policy (`entities[2]`,
//! `custom[1].regex`) and what would have been accepted. A bad user regex is rejected here —
//! with the size limit named — never at request time. Custom regexes must have a bounded
//! longest match (≤ 256 bytes) so the stream redactor's hold-back stays bounded.
//!
//! What it does not do: read environment variables (the caller passes the HMAC key) or decide
//! whether a pack-level setting is allowed in an environment.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex_automata::{meta, util::syntax};

use super::custom::{RegexEntity, RegexPass, TermPass, MAX_CUSTOM_MATCH, MAX_TERM};
use super::fold::{fold_term, max_match_len};
use crate::pack::{PiiDetectorConfig, RedactionStyle, BUILTIN_ENTITIES};

/// NFA size limit of one custom regex and of all of them combined.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One problem in a `pii-detector` configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PiiCompileError {
    /// Relative to the policy's settings, e.g. `custom[1].regex` or `entities[2]`.
    pub path: String,
    pub message: String,
    /// What would have been accepted, when that is a short list or rule.
    pub expected: Option<String>,
}

impl PiiCompileError {
    fn new(path: impl Into<String>, message: impl Into<String>, expected: Option<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            expected,
        }
    }
}

/// Everything `PiiDetector` needs, built and checked.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) names: Vec<String>,
    pub(crate) builtin_on: [bool; 7],
    pub(crate) regexes: Option<RegexPass>,
    pub(crate) terms: Option<TermPass>,
}

fn words_automaton(words: &[String]) -> Result<AhoCorasick, String> {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(words)
        .map_err(|e| e.to_string())
}

fn check_regex(pattern: &str) -> Result<(), String> {
    let hir = syntax::parse(pattern).map_err(|e| format!("invalid regex: {e}"))?;
    let props = hir.properties();
    if props.minimum_len().unwrap_or(0) == 0 {
        return Err("the regex can match empty text".to_owned());
    }
    match props.maximum_len() {
        Some(max) if max <= MAX_CUSTOM_MATCH => {}
        _ => {
            return Err(format!(
                "the regex can match more than {MAX_CUSTOM_MATCH} bytes; bound every repetition \
                 (e.g. `\\d{{6,12}}` instead of `\\d+`)"
            ))
        }
    }
    meta::Regex::builder()
        .configure(meta::Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)))
        .build(pattern)
        .map(|_| ())
        .map_err(|e| {
            format!("regex exceeds the {REGEX_SIZE_LIMIT}-byte size limit or is invalid: {e}")
        })
}

pub(crate) fn compile(
    cfg: &PiiDetectorConfig,
    hash_key: Option<&[u8]>,
) -> Result<Compiled, Vec<PiiCompileError>> {
    let mut errs = Vec::new();
    let regex_expect = Some(format!(
        "a Rust-syntax regex matching 1 to {MAX_CUSTOM_MATCH} bytes, within the {REGEX_SIZE_LIMIT}-byte size limit"
    ));
    let mut names: Vec<String> = BUILTIN_ENTITIES.iter().map(|s| (*s).to_owned()).collect();
    let mut seen: HashSet<&str> = BUILTIN_ENTITIES.iter().copied().collect();
    for (i, c) in cfg.custom.iter().enumerate() {
        let p = format!("custom[{i}]");
        let valid_name = !c.name.is_empty()
            && c.name.len() <= 64
            && c.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name {
            errs.push(PiiCompileError::new(
                format!("{p}.name"),
                format!("invalid entity name `{}`", c.name),
                Some("1-64 characters of a-z, 0-9 and _".to_owned()),
            ));
        } else if !seen.insert(c.name.as_str()) {
            errs.push(PiiCompileError::new(
                format!("{p}.name"),
                format!("entity `{}` is already defined", c.name),
                Some(
                    "a name that is neither built in nor used by another custom entity".to_owned(),
                ),
            ));
        }
        names.push(c.name.clone());
        match (&c.regex, &c.terms) {
            (Some(_), Some(_)) | (None, None) => errs.push(PiiCompileError::new(
                p.clone(),
                "a custom entity needs exactly one of `regex` and `terms`",
                Some("regex | terms".to_owned()),
            )),
            (Some(re), None) => {
                if let Err(m) = check_regex(re) {
                    errs.push(PiiCompileError::new(
                        format!("{p}.regex"),
                        m,
                        regex_expect.clone(),
                    ));
                }
            }
            (None, Some(terms)) => {
                if terms.is_empty() {
                    errs.push(PiiCompileError::new(
                        format!("{p}.terms"),
                        "the term list is empty",
                        Some("at least one term".to_owned()),
                    ));
                }
                for (j, t) in terms.iter().enumerate() {
                    if t.trim().is_empty() || t.len() > MAX_TERM {
                        errs.push(PiiCompileError::new(
                            format!("{p}.terms[{j}]"),
                            "a term must be 1 to 128 bytes and not blank",
                            Some(format!("1..={MAX_TERM} bytes")),
                        ));
                    }
                }
                if c.validator.is_some() {
                    errs.push(PiiCompileError::new(
                        format!("{p}.validator"),
                        "validators apply to regex entities only",
                        None,
                    ));
                }
                if c.context.is_some() {
                    errs.push(PiiCompileError::new(
                        format!("{p}.context"),
                        "context words apply to regex entities only",
                        None,
                    ));
                }
            }
        }
        if let Some(ctx) = &c.context {
            if ctx.is_empty() || ctx.iter().any(|w| w.trim().is_empty()) {
                errs.push(PiiCompileError::new(
                    format!("{p}.context"),
                    "context words must be non-empty",
                    None,
                ));
            }
        }
    }
    let mut enabled = vec![false; names.len()];
    match &cfg.entities {
        None => enabled.iter_mut().for_each(|e| *e = true),
        Some(list) => {
            for (i, name) in list.iter().enumerate() {
                match names.iter().position(|n| n == name) {
                    Some(k) => enabled[k] = true,
                    None => errs.push(PiiCompileError::new(
                        format!("entities[{i}]"),
                        format!("unknown entity `{name}`"),
                        Some(names.join(", ")),
                    )),
                }
            }
        }
    }
    if cfg.redaction == RedactionStyle::Hash && hash_key.is_none_or(<[u8]>::is_empty) {
        errs.push(PiiCompileError::new(
            "hash_key_env",
            "`redaction: hash` needs an HMAC key, and none was provided",
            Some("the name of an environment variable holding the key".to_owned()),
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let mut builtin_on = [false; 7];
    builtin_on
        .iter_mut()
        .zip(&enabled)
        .for_each(|(b, e)| *b = *e);
    let (regexes, terms) = match build_custom(cfg, &enabled) {
        Ok(v) => v,
        Err(e) => return Err(vec![e]),
    };
    Ok(Compiled {
        names,
        builtin_on,
        regexes,
        terms,
    })
}

type CustomPasses = (Option<RegexPass>, Option<TermPass>);

fn build_custom(
    cfg: &PiiDetectorConfig,
    enabled: &[bool],
) -> Result<CustomPasses, PiiCompileError> {
    let mut patterns = Vec::new();
    let mut entities = Vec::new();
    let mut terms = Vec::new();
    let mut entity_of = Vec::new();
    for (i, c) in cfg.custom.iter().enumerate() {
        let id = u16::try_from(BUILTIN_ENTITIES.len() + i)
            .map_err(|_| PiiCompileError::new("custom", "too many custom entities", None))?;
        if !enabled.get(usize::from(id)).copied().unwrap_or(false) {
            continue;
        }
        if let Some(re) = &c.regex {
            let context =
                match &c.context {
                    Some(words) => Some(words_automaton(words).map_err(|m| {
                        PiiCompileError::new(format!("custom[{i}].context"), m, None)
                    })?),
                    None => None,
                };
            patterns.push(re.as_str());
            entities.push(RegexEntity {
                entity: id,
                validator: c.validator,
                context,
            });
        }
        for t in c.terms.iter().flatten() {
            terms.push(t.trim().to_owned());
            entity_of.push(id);
        }
    }
    let regexes = if patterns.is_empty() {
        None
    } else {
        let re = meta::Regex::builder()
            .configure(meta::Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)))
            .build_many(&patterns)
            .map_err(|e| PiiCompileError::new("custom", format!("the custom regexes together exceed the {REGEX_SIZE_LIMIT}-byte size limit: {e}"), None))?;
        Some(RegexPass { re, entities })
    };
    let terms = if terms.is_empty() {
        None
    } else {
        let folded: Vec<String> = terms.iter().map(|t| fold_term(t)).collect();
        let max_match = folded.iter().map(|t| max_match_len(t)).max().unwrap_or(0);
        let ac = words_automaton(&folded).map_err(|m| PiiCompileError::new("custom", m, None))?;
        Some(TermPass {
            ac,
            entity_of,
            max_match,
        })
    };
    Ok((regexes, terms))
}
