"""Data in: CoNLL/DNRTI reading and dataset splits."""
