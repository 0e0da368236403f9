"""Entropy-coder speed: vaezip's compiled rANS against constriction's AnsCoder on the same symbols.

Cases: (a) per-symbol discretized logistic over 256 levels (random means and scales), (b) bucketed Gaussian
latents (posterior over 2^8 equal-mass buckets, precision 16).  constriction has no logistic and no equal-mass
buckets, so it codes the same symbols with its closest native model, QuantizedGaussian, with matching
per-symbol location and spread (for (b) in bucket-index space).  Timings include building the codec from float
parameters on both sides.  Runs are interleaved and the median of --repeats is reported.

    python bench/ans_speed.py [--quick] [--repeats N]
"""

import argparse
import math
import os
import statistics
import time

import constriction
import numpy as np

from vaezip.entropy import codecs, rans


def logistic_case(rng, n):
    mean = rng.uniform(0, 255, n)
    log_scale = rng.uniform(-1, 3, n)
    symbols = np.clip(np.round(mean + np.exp(log_scale) * rng.logistic(size=n)), 0, 255).astype(np.int64)
    vaezip = lambda: codecs.Logistic(mean, log_scale)  # noqa: E731
    std = np.exp(log_scale) * math.pi / math.sqrt(3)  # the logistic's standard deviation
    return symbols, vaezip, (constriction.stream.model.QuantizedGaussian(0, 255), mean, std)


def latent_case(rng, n, bits=8):
    latent = codecs.GaussianLatent(bits)
    mu, sigma = rng.normal(0, 1, n), np.exp(rng.uniform(-3, 0, n))
    z = mu + sigma * rng.standard_normal(n)
    symbols = np.clip(np.searchsorted(latent.edges, z) - 1, 0, (1 << bits) - 1)
    vaezip = lambda: latent.posterior(mu, sigma, precision=16)  # noqa: E731
    # the posterior in bucket-index space: location 2^b Phi(mu), spread 2^b phi(mu) sigma
    phi = np.exp(-0.5 * mu**2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(mu / math.sqrt(2)))
    model = constriction.stream.model.QuantizedGaussian(0, (1 << bits) - 1)
    return symbols, vaezip, (model, cdf * (1 << bits) - 0.5, np.maximum(phi * sigma * (1 << bits), 0.1))


def information_bits(codec, symbols):
    _, freq = codec.start_freq(symbols)
    return float(np.sum(codec.precision - np.log2(freq)))


def measure(symbols, make_codec, reference, lanes, repeats):
    """Median seconds of (vaezip push, vaezip pop, constriction encode, constriction decode) and sizes."""
    model, loc, spread = reference
    symbols32 = symbols.astype(np.int32)
    times = {key: [] for key in ("push", "pop", "encode", "decode")}
    for _ in range(repeats):
        t = time.perf_counter()
        msg = rans.Message(lanes)
        make_codec().push(msg, symbols)
        times["push"].append(time.perf_counter() - t)
        decoded = rans.Message.from_bytes(msg.to_bytes(), lanes)
        t = time.perf_counter()
        out = make_codec().pop(decoded)
        times["pop"].append(time.perf_counter() - t)
        assert np.array_equal(out, symbols)
        t = time.perf_counter()
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols32, model, loc, spread)
        times["encode"].append(time.perf_counter() - t)
        compressed = coder.get_compressed()
        t = time.perf_counter()
        out = constriction.stream.stack.AnsCoder(compressed).decode(model, loc, spread)
        times["decode"].append(time.perf_counter() - t)
        assert np.array_equal(out, symbols32)
    sizes = {"vaezip": msg.num_bits(), "info": information_bits(make_codec(), symbols)}
    sizes["constriction"] = 32 * compressed.size
    return {key: statistics.median(v) for key, v in times.items()}, sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200k symbols, fewer lane counts")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = 200_000 if args.quick else 1_000_000
    lane_counts = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    rng = np.random.default_rng(0)
    cases = {"(a) logistic, 256 levels": logistic_case(rng, n), "(b) Gaussian latent, b=8, p=16": latent_case(rng, n)}
    print(f"n = {n:,} symbols, median of {args.repeats} interleaved runs, load average {os.getloadavg()[0]:.1f}\n")
    print("| case | lanes | vaezip push | constriction encode | ratio | vaezip pop | constriction decode | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for name, (symbols, make_codec, reference) in cases.items():
        for lanes in lane_counts:
            t, sizes = measure(symbols, make_codec, reference, lanes, args.repeats)
            rate = {key: n / value / 1e6 for key, value in t.items()}
            print(
                f"| {name} | {lanes:,} | {rate['push']:.1f} M/s | {rate['encode']:.1f} M/s "
                f"| {t['encode'] / t['push']:.2f} | {rate['pop']:.1f} M/s | {rate['decode']:.1f} M/s "
                f"| {t['decode'] / t['pop']:.2f} |"
            )
            excess = sizes["vaezip"] - sizes["info"]
            empty = rans.Message(lanes).num_bits()  # what the initial heads cost: the per-lane flush
            notes.append(
                f"{name}, {lanes:,} lanes: {sizes['vaezip'] / 8:,.0f} bytes = information {sizes['info'] / 8:,.0f} "
                f"bytes + {excess / lanes:.2f} bits/lane (an empty message: {empty / lanes:.2f} bits/lane); "
                f"constriction (its own model): {sizes['constriction'] / 8:,.0f} bytes"
            )
    print("\nratio = vaezip throughput / constriction throughput\n")
    print("\n".join(f"- {line}" for line in notes))


if __name__ == "__main__":
    main()
