"""The cipher of the encrypted-voice examples (voice_scrambler.py, voice_descrambler.py):
a keyed, self-synchronising scrambler over 15-bit samples. See docs/encrypted-voice.md.

It shows the plumbing, it is not cryptography: use a vetted cipher for real secrets.

- Each sample is quantised to 15 bits, XORed with a key word chosen by the two previous
  *ciphertext* words (cipher feedback), and sent as the float ``(2c + 1 - 32768) / 32768``.
- Every ciphertext value is an odd multiple of 2^-15 in (-1, 1): a normal float32 (never 0,
  never denormal, NaN or Inf), exact in float32 and in 16-bit integers, so PipeWire's format
  conversions (F32 ↔ F32P ↔ S16 ↔ S32, no volume, no resampling) carry it unchanged.
- Exact zeros are never ciphertext: they are the sender's silence (a fail-closed slot's missed
  block), and the descrambler turns them back into silence.
- A receiver that starts late, or after a gap, is in step again after two samples: the key word
  depends only on what it received.
"""

import hashlib

import numpy as np

BITS = 15
WORDS = 1 << BITS  # 32768 codes
HALF = WORDS // 2  # 16384: plaintext x ↔ code round(x × HALF) + HALF
_MASK = WORDS - 1


def key_table(key):
    """32768 key words of 15 bits from SHA-256 of the key in counter mode."""
    raw = bytearray()
    counter = 0
    seed = key.encode("utf-8")
    while len(raw) < 2 * WORDS:
        raw += hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        counter += 1
    return np.frombuffer(bytes(raw[: 2 * WORDS]), dtype="<u2").astype(np.int64) & _MASK


def _index(prev1, prev2):
    return (prev1 * 181 + prev2) & _MASK


class Scrambler:
    """Encrypts float32 blocks ``(channels, frames)`` in place; one feedback state per channel."""

    def __init__(self, key, channels):
        self.table = key_table(key).tolist()  # a list: the loop below indexes it per sample
        self.state = [[0, 0] for _ in range(channels)]

    def process(self, block):
        codes = np.clip(np.rint(block * HALF), -HALF, HALF - 1).astype(np.int64) + HALF
        out = np.empty(codes.shape, dtype=np.int64)
        table = self.table
        for ch in range(block.shape[0]):
            if ch >= len(self.state):
                self.state.append([0, 0])
            p1, p2 = self.state[ch]
            row = out[ch]
            for i, p in enumerate(codes[ch].tolist()):
                c = p ^ table[(p1 * 181 + p2) & _MASK]
                row[i] = c
                p2, p1 = p1, c
            self.state[ch] = [p1, p2]
        block[...] = (2 * out + 1 - WORDS) / np.float32(WORDS)


class Descrambler:
    """Decrypts float32 blocks in place; exact zeros stay zeros (the sender's silence)."""

    def __init__(self, key, channels):
        self.table = key_table(key)
        self.state = np.zeros((channels, 2), dtype=np.int64)

    def process(self, block):
        channels, frames = block.shape
        if channels > self.state.shape[0]:
            self.state = np.vstack([self.state, np.zeros((channels - self.state.shape[0], 2), np.int64)])
        n = np.rint(block.astype(np.float64) * WORDS).astype(np.int64)
        codes = ((n + WORDS - 1) // 2) & _MASK
        history = np.concatenate([self.state[:channels, ::-1], codes], axis=1)  # c[-2], c[-1], c[0]…
        keys = self.table[_index(history[:, 1:-1], history[:, :-2])]
        plain = ((codes ^ keys) - HALF) / np.float32(HALF)
        self.state[:channels] = history[:, :-3:-1]  # the last two codes, newest first
        block[...] = np.where(block == 0, np.float32(0), plain)
