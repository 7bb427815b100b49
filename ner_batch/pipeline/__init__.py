"""Streaming pipeline: inputs, segmentation, shards, workers, records, resumable runs."""
