"""Independent reference implementations for the sandbox tests (run with /usr/bin/python3).

    reference.py KIND IN.f32 OUT.f32 CHANNELS FRAMES RATE BLOCKS PARAMS_JSON

IN and OUT are planar float32 (channel after channel). BLOCKS is the comma-separated list of
block sizes the test used (for plugins whose output depends on the block partition).
Written from the formulas, not from the plugins: no import of plugins-py here.
"""
import json
import math
import sys

import numpy as np


def gain(x, rate, blocks, p):
    return x * np.float32(p.get("gain", 1.0))


def rbj(shape, rate, freq, q, gain_db):
    # Robert Bristow-Johnson's cookbook, written out per shape.
    w = 2 * math.pi * freq / rate
    c, s = math.cos(w), math.sin(w)
    al = s / (2 * q)
    A = 10 ** (gain_db / 40)
    table = {
        "lowpass": ([(1 - c) / 2, 1 - c, (1 - c) / 2], [1 + al, -2 * c, 1 - al]),
        "highpass": ([(1 + c) / 2, -1 - c, (1 + c) / 2], [1 + al, -2 * c, 1 - al]),
        "peak": ([1 + al * A, -2 * c, 1 - al * A], [1 + al / A, -2 * c, 1 - al / A]),
        "notch": ([1, -2 * c, 1], [1 + al, -2 * c, 1 - al]),
    }
    b, a = table[shape]
    return [v / a[0] for v in b], [v / a[0] for v in a]


def biquad(x, rate, blocks, p):
    b, a = rbj(p.get("shape", "peak"), rate, p.get("freq", 1000.0), p.get("q", 0.707), p.get("gain_db", 0.0))
    y = np.zeros_like(x, dtype=np.float64)
    for ch in range(x.shape[0]):
        x1 = x2 = y1 = y2 = 0.0
        row = x[ch].astype(np.float64)
        out = y[ch]
        for n in range(row.size):
            v = b[0] * row[n] + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
            x2, x1 = x1, row[n]
            y2, y1 = y1, v
            out[n] = v
    return y.astype(np.float32)


def splitmix(seed, index):
    m = (1 << 64) - 1
    z = (index + seed) & m
    z = (z * 0x9E3779B97F4A7C15) & m
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & m
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & m
    z ^= z >> 31
    return z


def scrambler(x, rate, blocks, p):
    import hashlib

    key = p.get("key", "sandpipe")
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    start = int(p.get("_position", 0))
    channels, frames = x.shape
    bits = x.copy().view(np.uint32)
    for f in range(frames):
        for c in range(channels):
            word = splitmix(seed, (start + f) * channels + c) >> 32
            bits[c, f] ^= np.uint32(word & 0x807FFFFF)
    return bits.view(np.float32)


def legacy_gain(x, rate, blocks, p):
    return x * np.float32(10.0 ** (float(p.get("gain_db", 0.0)) / 20.0))


def legacy_gate(x, rate, blocks, p):
    threshold = float(p.get("threshold_db", -40.0))
    floor = np.float32(10.0 ** (float(p.get("floor_db", -80.0)) / 20.0))
    y = x.copy()
    pos = 0
    for n in blocks:
        blk = y[:, pos:pos + n]
        rms = math.sqrt(float(np.mean(blk.astype(np.float64) ** 2)))
        if (20 * math.log10(rms) if rms > 0 else -200.0) < threshold:
            blk *= floor
        pos += n
    return y


def delay(x, rate, blocks, p):
    d = int(p.get("latency", 64))
    y = np.zeros_like(x)
    y[:, d:] = x[:, : x.shape[1] - d]
    return y


def main(argv):
    kind, src, dst, channels, frames, rate, blocks, params = argv[1:9]
    channels, frames, rate = int(channels), int(frames), float(rate)
    x = np.fromfile(src, dtype=np.float32).reshape(channels, frames)
    sizes = [int(b) for b in blocks.split(",") if b]
    y = globals()[kind](x, rate, sizes, json.loads(params))
    np.ascontiguousarray(y, dtype=np.float32).tofile(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
