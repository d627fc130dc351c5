"""Split points of task models (coding for machines: model splitting and direct coding)."""
