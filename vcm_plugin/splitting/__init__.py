"""Task-aware codecs (fcm-vvc, direct, feature-learned), the per-cut view their training uses, `vcm layers`."""
