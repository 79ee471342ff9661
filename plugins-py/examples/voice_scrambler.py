"""Encrypts the microphone's voice (the TX side of docs/encrypted-voice.md).

Written against the earlier pipeline's plugin API (base_plugin, create_plugin()), as its users'
plugins are: Sandpipe runs it unmodified, fail-closed by default (docs/encrypted-voice.md). The
cipher itself is voice_cipher.py, beside this file; parameter `key` (text), the same on both
ends.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # base_plugin
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # voice_cipher

from base_plugin import AudioProcessorPlugin, PluginInfo, PluginState, PluginType  # noqa: E402

import voice_cipher  # noqa: E402


class VoiceScrambler(AudioProcessorPlugin):
    def __init__(self):
        super().__init__()
        self.sample_rate = 48000
        self.channel_count = 2
        self.key = "sandpipe"
        self.cipher = None

    def initialize(self):
        self.state = PluginState.INITIALIZED
        return True

    def shutdown(self):
        self.cipher = None
        self.state = PluginState.UNLOADED

    def start(self):
        self.cipher = voice_cipher.Scrambler(self.key, self.channel_count)
        self.state = PluginState.RUNNING
        return True

    def stop(self):
        self.state = PluginState.INITIALIZED

    def get_info(self):
        return PluginInfo("Voice scrambler", "1.0.0", "Sandpipe examples", "Encrypts the microphone's voice (the TX side of docs/encrypted-voice.md).", PluginType.PROCESSOR)

    def set_parameter(self, key, value):
        if key == "key":
            self.key = str(value)
            if self.cipher is not None:
                self.cipher = voice_cipher.Scrambler(self.key, self.channel_count)

    def get_parameter(self, key):
        return self.key if key == "key" else ""

    def get_sample_rate(self):
        return self.sample_rate

    def set_sample_rate(self, rate):
        self.sample_rate = rate

    def get_channel_count(self):
        return self.channel_count

    def set_channel_count(self, channels):
        self.channel_count = channels

    def process_audio(self, buffer):
        if self.cipher is None:
            return False  # not started: not processed (a fail-closed slot sends silence)
        self.cipher.process(buffer.data)
        return True


def create_plugin():
    return VoiceScrambler()
