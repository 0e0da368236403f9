"""The integer CDFs the compiled core codes with: C(e) at the edges e = 0..alphabet of every symbol i, with
C(0) = 0 and C(alphabet) = 2^precision, in one of three forms (``kernels`` evaluates them):

- ``Rows``: C = rows[i, e], a table (one row shared by all symbols when it has a single row);
- ``Divided``: C = floor(e 2^precision / count), uniform over ``count`` symbols;
- ``Mixture``: C = floor(sum_k w[i, k] F(edges[e] * slope[i, k] - offset[i, k]) * mult / 2^shift) + e, F an
  ``IntCdf`` table (``tables.IntCdf.scaled``: value and 16-bit increment packed in one int64). ``quantiles``
  (``IntCdf.quantiles``, for mixtures over pixel levels) lets pop start its search from a guess; a single entry
  means none.
"""
from typing import NamedTuple

import numpy as np


class Rows(NamedTuple):
    rows: np.ndarray            # (1 or n, alphabet + 1) int64


class Divided(NamedTuple):
    count: int


class Mixture(NamedTuple):
    slope: np.ndarray           # (n, K) float64
    offset: np.ndarray          # (n, K) float64
    weights: np.ndarray         # (n, K) int64
    edges: np.ndarray           # (alphabet + 1,) float64
    table: np.ndarray           # packed IntCdf table
    quantiles: np.ndarray       # IntCdf.quantiles, or one entry: no guess
    mult: int
    shift: int
