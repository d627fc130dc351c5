"""Learned (CompressAI) models: building and safe loading, and the bitstream packing of their strings."""
