"""Limits shared by the coder and the file format (which records and checks them)."""

MAX_PRECISION = 24          # bits of any rANS distribution
LATENT_BITS_MAX = 12        # log2 of the number of latent buckets
LEVEL_PRECISION_MIN = 8     # pixel distributions over 256 levels need 2^p >= 256
