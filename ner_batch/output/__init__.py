"""Output formats beyond JSONL and CoNLL: STIX 2.1 bundles and an HTML view."""
