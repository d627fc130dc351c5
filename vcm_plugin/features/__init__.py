"""Feature coding for split inference: packing a cut point's tensors into picture frames."""
