"""Training: fine-tuning loop, batching, metrics and curves."""
