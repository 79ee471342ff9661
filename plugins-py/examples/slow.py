"""Slow: takes a configurable time per block (sleeping or spinning), then applies a gain.

For testing deadlines: with ``only_block = N`` just block N (counting from 0) takes
``delay_ms``; the other blocks take ``other_ms`` (default 0).
"""

import time

import sandpipe


class Slow(sandpipe.Plugin):
    """Spends delay_ms per block, then multiplies by gain."""

    name = "Slow"
    version = "1.0.0"
    params = {
        "delay_ms": sandpipe.Param(5.0, 0.0, 10000.0, label="Delay", unit="ms"),
        "only_block": sandpipe.Param(-1, -1, 2**31 - 1, label="Only block (-1: every block)"),
        "other_ms": sandpipe.Param(0.0, 0.0, 10000.0, label="Delay of the other blocks", unit="ms"),
        "mode": sandpipe.Choice("sleep", ("sleep", "spin"), label="Mode"),
        "gain": sandpipe.Param(1.0, 0.0, 4.0, label="Gain"),
    }

    def prepare(self, rate, channels, max_frames):
        super().prepare(rate, channels, max_frames)
        self.blocks = 0

    def process(self, block):
        if self.only_block < 0 or self.blocks == self.only_block:
            seconds = self.delay_ms / 1000.0
        else:
            seconds = self.other_ms / 1000.0
        if seconds > 0:
            if self.mode == "sleep":
                time.sleep(seconds)
            else:
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    pass
        self.blocks += 1
        block *= self.gain
