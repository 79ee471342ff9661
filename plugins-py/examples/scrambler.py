"""Scrambler: a keyed, stateful stream cipher over the sample bits. Running the output through a
second Scrambler with the same key (starting at the same position) restores the input exactly.

Each sample's sign and mantissa bits are XORed with a keystream word; the exponent is kept, so
the output stays finite (scrambled audio sounds like loud noise at the input's level). The
keystream is counter based (splitmix64 of key and sample index), so the position is all the
state there is: ``get_state`` saves it and a restarted sandbox resumes where it stopped.
"""

import hashlib

import numpy as np

import sandpipe

_MASK = np.uint32(0x807FFFFF)  # sign + mantissa; never the exponent
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _key_seed(key):
    return np.uint64(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little"))


class Scrambler(sandpipe.Plugin):
    """XORs sample bits with a keyed keystream; the same key descrambles."""

    name = "Scrambler"
    version = "1.0.0"
    params = {"key": sandpipe.Text("sandpipe", label="Key")}

    def prepare(self, rate, channels, max_frames):
        super().prepare(rate, channels, max_frames)
        self.position = 0  # frames processed so far
        # Scratch arrays sized once: the keystream is computed in place in them.
        self._offsets = np.arange(channels * max_frames, dtype=np.uint64)
        self._x = np.empty(channels * max_frames, dtype=np.uint64)
        self._words = np.empty((channels, max_frames), dtype=np.uint32)
        self.seed = _key_seed(self.key)

    def set_param(self, key, value):
        super().set_param(key, value)
        if key == "key":
            self.seed = _key_seed(value)

    def process(self, block):
        channels, frames = block.shape
        n = channels * frames
        x = self._x[:n]
        # Word index of (frame f, channel c) is (position + f) * channels + c.
        np.add(self._offsets[:n], np.uint64(self.position * channels), out=x)
        x += self.seed
        x *= _GOLDEN
        x ^= x >> np.uint64(30)
        x *= _MIX1
        x ^= x >> np.uint64(27)
        x *= _MIX2
        x ^= x >> np.uint64(31)
        # x is frame-major (f * channels + c); the block is channel-major.
        words = self._words[:, :frames]
        words[...] = (x >> np.uint64(32)).astype(np.uint32).reshape(frames, channels).T
        words &= _MASK
        bits = block.view(np.uint32)
        bits ^= words
        self.position += frames

    def get_state(self):
        return int(self.position).to_bytes(8, "little")

    def set_state(self, data):
        if len(data) == 8:
            self.position = int.from_bytes(data, "little")
