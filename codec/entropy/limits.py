"""Numbers the coder's modules and the file format share: precisions, latent sizes and the rANS state's bounds."""

MAX_PRECISION = 24          # bits of any rANS distribution
LATENT_BITS_MAX = 12        # log2 of the number of latent buckets
LEVEL_PRECISION_MIN = 8     # pixel distributions over 256 levels need 2^p >= 256
HEAD_MIN = 1 << 31          # every head lane stays in [2^31, 2^63)
VIRTUAL_WORD = 0x5A5A5A5A   # the words below the bottom of a fresh encoding message's tail
