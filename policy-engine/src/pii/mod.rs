//! PII detection and redaction. Placeholder: the engine lands with the PII issue.
