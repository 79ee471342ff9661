"""Biquad: one second-order IIR section (RBJ audio-EQ cookbook), state carried across blocks."""

import math

import numpy as np
from scipy import signal

import sandpipe

SHAPES = ("lowpass", "highpass", "bandpass", "notch", "peak", "lowshelf", "highshelf")


def cookbook(shape, rate, freq, q, gain_db):
    """Returns (b, a), normalised so a[0] == 1."""
    w0 = 2.0 * math.pi * min(freq, 0.49 * rate) / rate
    cos_w0, sin_w0 = math.cos(w0), math.sin(w0)
    alpha = sin_w0 / (2.0 * q)
    amp = 10.0 ** (gain_db / 40.0)
    if shape == "lowpass":
        b = [(1 - cos_w0) / 2, 1 - cos_w0, (1 - cos_w0) / 2]
        a = [1 + alpha, -2 * cos_w0, 1 - alpha]
    elif shape == "highpass":
        b = [(1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2]
        a = [1 + alpha, -2 * cos_w0, 1 - alpha]
    elif shape == "bandpass":
        b = [alpha, 0.0, -alpha]
        a = [1 + alpha, -2 * cos_w0, 1 - alpha]
    elif shape == "notch":
        b = [1.0, -2 * cos_w0, 1.0]
        a = [1 + alpha, -2 * cos_w0, 1 - alpha]
    elif shape == "peak":
        b = [1 + alpha * amp, -2 * cos_w0, 1 - alpha * amp]
        a = [1 + alpha / amp, -2 * cos_w0, 1 - alpha / amp]
    else:
        sq = 2.0 * math.sqrt(amp) * alpha
        if shape == "lowshelf":
            b = [amp * ((amp + 1) - (amp - 1) * cos_w0 + sq),
                 2 * amp * ((amp - 1) - (amp + 1) * cos_w0),
                 amp * ((amp + 1) - (amp - 1) * cos_w0 - sq)]
            a = [(amp + 1) + (amp - 1) * cos_w0 + sq,
                 -2 * ((amp - 1) + (amp + 1) * cos_w0),
                 (amp + 1) + (amp - 1) * cos_w0 - sq]
        else:
            b = [amp * ((amp + 1) + (amp - 1) * cos_w0 + sq),
                 -2 * amp * ((amp - 1) + (amp + 1) * cos_w0),
                 amp * ((amp + 1) + (amp - 1) * cos_w0 - sq)]
            a = [(amp + 1) - (amp - 1) * cos_w0 + sq,
                 2 * ((amp - 1) - (amp + 1) * cos_w0),
                 (amp + 1) - (amp - 1) * cos_w0 - sq]
    b = np.asarray(b, dtype=np.float64) / a[0]
    a = np.asarray(a, dtype=np.float64) / a[0]
    return b, a


class Biquad(sandpipe.Plugin):
    """Second-order EQ section: low/high/band-pass, notch, peak and shelves."""

    name = "Biquad EQ"
    version = "1.0.0"
    params = {
        "shape": sandpipe.Choice("peak", SHAPES, label="Shape"),
        "freq": sandpipe.Param(1000.0, 20.0, 20000.0, label="Frequency", unit="Hz"),
        "q": sandpipe.Param(0.707, 0.1, 20.0, label="Q"),
        "gain_db": sandpipe.Param(0.0, -24.0, 24.0, label="Gain", unit="dB"),
    }

    def prepare(self, rate, channels, max_frames):
        super().prepare(rate, channels, max_frames)
        # Filter memory, one row per channel (transposed direct form II, as lfilter keeps it).
        self.zi = np.zeros((channels, 2), dtype=np.float64)
        self._design()

    def set_param(self, key, value):
        super().set_param(key, value)
        if self.rate:
            # A coefficient change keeps the filter memory: no click, no reset.
            self._design()

    def _design(self):
        self.b, self.a = cookbook(self.shape, self.rate, self.freq, self.q, self.gain_db)

    def process(self, block):
        out, self.zi = signal.lfilter(self.b, self.a, block, axis=1, zi=self.zi)
        block[...] = out

    def get_state(self):
        return self.zi.astype("<f8").tobytes()

    def set_state(self, data):
        zi = np.frombuffer(data, dtype="<f8")
        if zi.size == self.zi.size:
            self.zi = zi.reshape(self.zi.shape).copy()
