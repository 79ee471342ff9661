"""Gain: scales every sample by a linear factor. The smallest useful Sandpipe plugin."""

import sandpipe


class Gain(sandpipe.Plugin):
    """Multiplies the signal by a linear gain factor."""

    name = "Gain"
    version = "1.0.0"
    params = {
        "gain": sandpipe.Param(1.0, 0.0, 4.0, label="Gain", unit="x"),
        "mute": sandpipe.Toggle(False, label="Mute"),
    }

    def process(self, block):
        # In place on the shared-memory view: no array is allocated.
        block *= 0.0 if self.mute else self.gain
