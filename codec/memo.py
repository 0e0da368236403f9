"""Remembering the results of expensive, deterministic encoder steps for the pictures seen last.

The encoder asks for the same JPEG XL stream when it compares codings and again when it writes the file, and for
the same model estimate when it chooses a model and when it screens a single picture. ``background`` runs other
work (the JPEG XL probes of an archive's pictures) in a thread while the encoder goes on.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import threading
from collections import OrderedDict
from concurrent.futures import Future

import numpy as np


def digest(*arrays: np.ndarray | None) -> bytes:
    """A hash of arrays' shapes, types and contents (None for an absent one)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(repr(None if a is None else (a.shape, a.dtype.str)).encode())
        if a is not None:
            h.update(np.ascontiguousarray(a).data)
    return h.digest()


_MEMOS: list[OrderedDict] = []     # every remembered function's results, for ``forget``


def forget() -> None:
    """Drop every remembered result (benchmarks time each run from scratch)."""
    for memo in _MEMOS:
        memo.clear()


def remembered(key, size: int = 8):
    """Decorator: remember the last ``size`` results of a function, looked up by ``key(*args)`` with every default
    argument filled in (a call naming a default finds the result of one that leaves it out).

    ``fn.ahead(*args)`` starts computing a result in a background thread (for work that releases the interpreter,
    such as a JPEG XL encoding, while the caller does other work); a call for the same key then waits for it."""
    def decorate(fn):
        memo: OrderedDict = OrderedDict()
        _MEMOS.append(memo)
        lock = threading.Lock()
        signature = inspect.signature(fn)

        def entry(args) -> tuple:
            """(key, the remembered result of the arguments, whether it is new: not yet started)."""
            bound = signature.bind(*args)
            bound.apply_defaults()
            k = key(*bound.args)
            with lock:
                if k in memo:
                    memo.move_to_end(k)
                    return k, memo[k], False
                memo[k] = result = Future()
                if len(memo) > size:
                    memo.popitem(last=False)
                return k, result, True

        def run(k, result: Future, args) -> None:
            try:
                result.set_result(fn(*args))
            except Exception as e:          # not remembered: the next call tries again
                with lock:
                    if memo.get(k) is result:
                        del memo[k]
                result.set_exception(e)

        @functools.wraps(fn)
        def wrapper(*args):
            k, result, new = entry(args)
            if new:
                run(k, result, args)
            return result.result()

        def ahead(*args) -> None:
            k, result, new = entry(args)
            if new:
                threading.Thread(target=run, args=(k, result, args), daemon=True).start()

        wrapper.ahead = ahead
        return wrapper
    return decorate


def background(fn) -> Future:
    """``fn()`` computed in a daemon thread (it does not hold up the exit of a process that fails meanwhile)."""
    result = Future()

    def run() -> None:
        try:
            result.set_result(fn())
        except Exception as e:          # raised again by result.result()
            result.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return result
