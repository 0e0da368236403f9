"""The grids of the coder's distribution parameters. The networks output onto them (their heads' units), and the
codecs snap every parameter to them before it becomes an integer CDF, so both sides compute the same frequencies.
"""

# discretized logistics over pixel levels: mean in 1/64 of a level, natural log scale (in levels) in 1/32
MEAN_STEP, MEAN_RANGE = 1 / 64, (-1024.0, 1280.0)
LOG_SCALE_STEP, LOG_SCALE_RANGE = 1 / 32, (-7.0, 6.0)
LOGIT_STEP, LOGIT_SPAN = 1 / 64, 24.0  # mixture logits; components LOGIT_SPAN below the top get weight 0
WEIGHT_BITS = 8                         # integer mixture weights sum to 2^8
LEVELS = 256

# Gaussian posterior over latent buckets: mean in 1/1024, log sigma in 1/64
POST_MEAN_STEP, POST_MEAN_RANGE = 1 / 1024, (-16.0, 16.0)
POST_LOG_SIGMA_STEP, POST_LOG_SIGMA_RANGE = 1 / 64, (-10.0, 3.0)
