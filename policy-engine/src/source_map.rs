//! Where each value of a YAML document stands in the text.
//!
//! serde gives us typed values but no positions; a diagnostic needs the line and column of the
//! offending value. This module walks the document once with yaml-rust2's marked event parser and
//! records, for every path (`policy.pii-detector.action`, `tests[2].expect`), the position of the
//! key and of the value. It runs only on the reload path, never per request.
//!
//! It does not resolve anchors and aliases beyond recording where the alias stands, and it reads
//! only the first document of a stream (a pack is one document).
//!
//! The walk is done lazily, on the first lookup: a pack without diagnostics never needs a
//! position, and the marked parse is a large share of a reload's time.

use std::collections::HashMap;
use std::sync::OnceLock;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A place in the source: 1-based line and column, and a length for the caret (in chars).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub line: usize,
    pub column: usize,
    pub len: usize,
}

#[derive(Debug, Default)]
pub struct SourceMap {
    text: String,
    index: OnceLock<Index>,
}

#[derive(Debug, Default)]
struct Index {
    values: HashMap<String, Span>,
    keys: HashMap<String, Span>,
}

impl SourceMap {
    /// Index `text` now.
    pub fn index(text: &str) -> Self {
        let map = Self::lazy(text);
        let _ = map.get();
        map
    }

    /// Keep `text` and index it on the first lookup.
    pub fn lazy(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            index: OnceLock::new(),
        }
    }

    /// A document the parser rejects yields an empty index: the syntax error itself is
    /// reported by the serde parse, with its own position.
    fn get(&self) -> &Index {
        self.index.get_or_init(|| {
            let mut walker = Walker::default();
            let mut parser = Parser::new_from_str(&self.text);
            if parser.load(&mut walker, false).is_err() {
                return Index::default();
            }
            walker.map
        })
    }

    /// Position of the value at `path`.
    pub fn value(&self, path: &str) -> Option<Span> {
        self.get().values.get(path).copied()
    }

    /// Position of the key that introduces `path` (for "unknown field" diagnostics).
    pub fn key(&self, path: &str) -> Option<Span> {
        self.get().keys.get(path).copied()
    }

    /// The closest known place for `path`: its value, else its key, else the key of the nearest
    /// ancestor that exists (a block mapping's own position is its first key, which would point
    /// one line too low for "missing field" diagnostics).
    pub fn nearest(&self, path: &str) -> Option<Span> {
        if let Some(s) = self.value(path).or_else(|| self.key(path)) {
            return Some(s);
        }
        let mut p = path;
        loop {
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
            if let Some(s) = self.key(p).or_else(|| self.value(p)) {
                return Some(s);
            }
        }
    }
}

/// Join a path and a map key the way diagnostics print it.
pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Join a path and a list index.
pub fn item(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    map: Index,
    done: bool,
}

fn span(mark: Marker, len: usize) -> Span {
    Span {
        line: mark.line(),
        column: mark.col() + 1,
        len: len.max(1),
    }
}

fn scalar_len(value: &str, style: TScalarStyle) -> usize {
    match style {
        TScalarStyle::Plain => value.chars().count(),
        TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => value.chars().count() + 2,
        TScalarStyle::Literal | TScalarStyle::Folded => 1,
    }
}

impl Walker {
    /// Called for every node. Returns the node's path when it is a value (not a mapping key).
    /// Only scalars get a value position: the parser marks a block collection where its first
    /// entry's content starts, which is not a useful place to point at; `nearest` uses the key.
    fn node(&mut self, mark: Marker, scalar: Option<(&str, TScalarStyle)>) -> Option<String> {
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Seq { path, next }) => {
                let p = item(path, *next);
                *next += 1;
                p
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => child(path, &k),
                None => {
                    // This node is a key. Complex (non-scalar) keys get a placeholder name.
                    let name = scalar.map_or_else(|| "?".to_owned(), |(v, _)| v.to_owned());
                    let len = scalar.map_or(1, |(v, s)| scalar_len(v, s));
                    self.map.keys.insert(child(path, &name), span(mark, len));
                    *key = Some(name);
                    return None;
                }
            },
        };
        if let Some((v, s)) = scalar {
            self.map
                .values
                .insert(path.clone(), span(mark, scalar_len(v, s)));
        }
        Some(path)
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        match ev {
            Event::Scalar(value, style, ..) => {
                self.node(mark, Some((&value, style)));
            }
            Event::Alias(_) => {
                self.node(mark, Some(("*", TScalarStyle::Plain)));
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.node(mark, None) {
                    self.stack.push(Frame::Map { path, key: None });
                } else {
                    // A mapping used as a key: push a frame so its contents are walked, then
                    // discarded with it.
                    self.stack.push(Frame::Map {
                        path: "?".to_owned(),
                        key: None,
                    });
                }
            }
            Event::SequenceStart(..) => {
                let path = self.node(mark, None).unwrap_or_else(|| "?".to_owned());
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "pack:\n  name: support\n  version: 2.3.0\npolicies:\n  chain: [audit-logger, pii-detector]\npolicy:\n  pii-detector:\n    action: \"redcat\"\n";

    #[test]
    fn records_value_and_key_positions() {
        let map = SourceMap::index(DOC);
        assert_eq!(
            map.value("pack.name"),
            Some(Span {
                line: 2,
                column: 9,
                len: 7
            })
        );
        assert_eq!(
            map.key("pack.version").map(|s| (s.line, s.column)),
            Some((3, 3))
        );
        assert_eq!(
            map.value("policies.chain[1]").map(|s| (s.line, s.column)),
            Some((5, 25))
        );
        // Quoted scalars include their quotes in the caret.
        assert_eq!(
            map.value("policy.pii-detector.action"),
            Some(Span {
                line: 8,
                column: 13,
                len: 8
            })
        );
    }

    #[test]
    fn nearest_falls_back_to_the_closest_ancestor() {
        let map = SourceMap::index(DOC);
        let s = map
            .nearest("policy.pii-detector.entities[3]")
            .map(|s| s.line);
        assert_eq!(s, Some(7));
    }

    #[test]
    fn broken_yaml_gives_an_empty_map_not_a_panic() {
        let map = SourceMap::index("pack: [unclosed\n  x: : :");
        assert_eq!(map.value("pack"), None);
    }
}
