"""The entropy coder: a multi-lane rANS message, its compiled loops, deterministic integer CDFs and composable
codecs. It knows nothing of images or networks; the networks output onto its parameter grids (``grids``)."""
