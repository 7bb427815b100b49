"""ner-batch: high-throughput batch tagging of named entities in CTI text."""

__version__ = "0.1.0"
