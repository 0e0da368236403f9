"""From an image's 8-bit planes to a rANS message and back: tiles and batches, the description of a batch's stages
(bits back, scale offsets, pixels), and a whole file's model-coded images."""
