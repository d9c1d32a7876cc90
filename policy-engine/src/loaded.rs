//! What can be done with a [`LoadedPack`]: pick an environment, compile it, validate everything.

use crate::compile::{compile, CompileOptions, CompiledPack};
use crate::decode::Sink;
use crate::diagnostic::{DiagnosticCode, Diagnostics, PackDiagnostic};
use crate::load::{load, LoadedPack};
use crate::pack::PackDocument;

impl LoadedPack {
    /// The names of the environments the pack declares.
    pub fn environments(&self) -> impl Iterator<Item = &str> {
        self.resolved.keys().map(String::as_str)
    }

    /// The document as `environment` sees it. `None` is the base document. A pack without an
    /// `environments:` block applies unchanged everywhere; a pack with one must name the
    /// environment, so a typo (`--environment prdo`) cannot silently fall back to the base.
    pub fn resolve(&self, environment: Option<&str>) -> Result<&PackDocument, Diagnostics> {
        let Some(env) = environment else {
            return Ok(&self.document);
        };
        if self.resolved.is_empty() {
            return Ok(&self.document);
        }
        self.resolved.get(env).ok_or_else(|| {
            let known: Vec<&str> = self.environments().collect();
            let mut d = PackDiagnostic::error(
                DiagnosticCode::UnknownEnvironment,
                "environments",
                format!("the pack declares no environment `{env}`"),
            )
            .found(env.to_owned())
            .expected(format!("one of {}", known.join(", ")));
            if let Some(s) = self.source_map.key("environments") {
                d = d.at(s.line, s.column);
            }
            d.into()
        })
    }

    /// Resolve `environment` and build every policy.
    pub fn compile(
        &self,
        environment: Option<&str>,
        options: &CompileOptions,
    ) -> Result<CompiledPack, Diagnostics> {
        let doc = self.resolve(environment)?;
        let env = environment.filter(|_| !self.resolved.is_empty());
        compile(doc, environment, self.hash, options).map_err(|errs| {
            // Place each compile error in the text: in the override block when it came from there.
            let mut sink = Sink::new(&self.source_map);
            sink.override_prefix = env.map(|e| format!("environments.{e}"));
            for d in errs.0 {
                sink.emit(d, false);
            }
            Diagnostics(sink.out)
        })
    }
}

/// Everything `palisade validate` reports for one document: load diagnostics, then the
/// compilation of the base and of every declared environment. An empty error list means every
/// environment of this pack can be activated.
pub fn validate_text(text: &str, options: &CompileOptions) -> (Option<LoadedPack>, Diagnostics) {
    let pack = match load(text) {
        Ok(p) => p,
        Err(d) => return (None, d),
    };
    let mut all = pack.warnings.clone();
    let mut targets: Vec<Option<&str>> = vec![None];
    targets.extend(pack.environments().map(Some));
    for env in targets {
        if let Err(errs) = pack.compile(env, options) {
            for d in errs.0 {
                if !all.iter().any(|o| o == &d) {
                    all.push(d);
                }
            }
        }
    }
    all.sort();
    (Some(pack), all)
}
