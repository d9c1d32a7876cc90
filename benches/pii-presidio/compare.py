#!/usr/bin/env python3
"""Palisade's PII engine vs Presidio's pattern recognizers, same corpus, same run.

Usage (from the repository root):
    export CARGO_TARGET_DIR=/work/target-pii   # or wherever you build
    PII_CORPUS_OUT=/tmp/corpus.jsonl cargo test -p policy-engine --test pii_accuracy -- --ignored export
    cargo build --release -p palisade
    pip install presidio-analyzer
    python3 benches/pii-presidio/compare.py /tmp/corpus.jsonl $CARGO_TARGET_DIR/release/palisade

Presidio runs its recognizers directly (no spaCy model is needed: `nlp_artifacts=None`), each
on every text, keeping every result with score > 0 — the most recall Presidio can give without
context words. Scoring: a prediction counts only when entity and span match a label exactly.
Presidio has no API-key recognizer, so its api_key row is all misses. Palisade is timed as a
whole process (`palisade scan --jsonl`, JSON parsing included); Presidio as the Python calls.
"""
import json
import subprocess
import sys
import time
from collections import defaultdict

from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)

PRESIDIO_TO_OURS = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "CREDIT_CARD": "credit_card",
    "US_SSN": "ssn",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip_address",
}
ENTITIES = ["api_key", "credit_card", "email", "iban", "ip_address", "phone", "ssn"]


def byte_to_char(text, offset):
    return len(text.encode("utf-8")[:offset].decode("utf-8", errors="ignore"))


def score(samples, predictions):
    table = defaultdict(lambda: [0, 0, 0])  # tp, fp, fn
    for sample, preds in zip(samples, predictions):
        labels = {(l["entity"], l["start"], l["end"]) for l in sample["labels"]}
        preds = set(preds)
        for p in preds:
            table[p[0]][0 if p in labels else 1] += 1
        for l in labels - preds:
            table[l[0]][2] += 1
    return table


def print_table(name, table, seconds, nbytes):
    print(f"\n{name}: {nbytes / seconds / 1e6:.2f} MB/s ({seconds:.3f} s for {nbytes / 1e6:.2f} MB)")
    print("| entity | TP | FP | FN | precision | recall |\n|---|---|---|---|---|---|")
    for e in ENTITIES:
        tp, fp, fn = table[e]
        p = tp / max(tp + fp, 1)
        r = tp / max(tp + fn, 1)
        print(f"| {e} | {tp} | {fp} | {fn} | {p:.4f} | {r:.4f} |")


def main():
    corpus_path, palisade = sys.argv[1], sys.argv[2]
    samples = [json.loads(l) for l in open(corpus_path, encoding="utf-8")]
    for s in samples:
        s["labels"] = [
            {**l, "start": byte_to_char(s["text"], l["start"]), "end": byte_to_char(s["text"], l["end"])}
            for l in s["labels"]
        ]
    nbytes = sum(len(s["text"].encode("utf-8")) for s in samples)

    stdin = "".join(json.dumps({"text": s["text"]}) + "\n" for s in samples)
    t0 = time.perf_counter()
    out = subprocess.run([palisade, "scan", "--jsonl"], input=stdin.encode(), capture_output=True, check=True)
    ours_s = time.perf_counter() - t0
    ours = []
    for s, line in zip(samples, out.stdout.decode().splitlines()):
        r = json.loads(line)
        ours.append([(f["entity"], byte_to_char(s["text"], f["start"]), byte_to_char(s["text"], f["end"]))
                     for f in r["findings"]])

    recognizers = [EmailRecognizer(), PhoneRecognizer(), CreditCardRecognizer(), UsSsnRecognizer(),
                   IbanRecognizer(), IpRecognizer()]
    t0 = time.perf_counter()
    theirs = []
    for s in samples:
        preds = []
        for rec in recognizers:
            for r in rec.analyze(s["text"], rec.supported_entities, None) or []:
                if r.score > 0 and r.entity_type in PRESIDIO_TO_OURS:
                    preds.append((PRESIDIO_TO_OURS[r.entity_type], r.start, r.end))
        theirs.append(preds)
    presidio_s = time.perf_counter() - t0

    print(f"{len(samples)} samples, {nbytes} bytes")
    print_table("palisade scan --jsonl (whole process)", score(samples, ours), ours_s, nbytes)
    print_table("presidio pattern recognizers", score(samples, theirs), presidio_s, nbytes)


if __name__ == "__main__":
    main()
