"""Remembering the results of expensive, deterministic encoder steps for the pictures seen last.

The encoder asks for the same JPEG XL stream when it compares codings and again when it writes the file, and for
the same model estimate when it chooses a model and when it screens a single picture.
"""
from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict

import numpy as np


def digest(*arrays: np.ndarray | None) -> bytes:
    """A hash of arrays' shapes, types and contents (None for an absent one)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(repr(None if a is None else (a.shape, a.dtype.str)).encode())
        if a is not None:
            h.update(np.ascontiguousarray(a).data)
    return h.digest()


def remembered(key, size: int = 8):
    """Decorator: remember the last ``size`` results of a function, looked up by ``key(*args)``."""
    def decorate(fn):
        memo: OrderedDict = OrderedDict()

        @functools.wraps(fn)
        def wrapper(*args):
            k = key(*args)
            if k in memo:
                memo.move_to_end(k)
            else:
                memo[k] = fn(*args)
                if len(memo) > size:
                    memo.popitem(last=False)
            return memo[k]
        return wrapper
    return decorate
