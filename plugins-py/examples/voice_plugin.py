"""The earlier-API processor both encrypted-voice examples are (voice_scrambler.py and
voice_descrambler.py differ only in the direction of the cipher): written against the earlier
pipeline's base_plugin, as its users' plugins are. Parameter `key` (text), the same on both ends.
"""

from base_plugin import AudioProcessorPlugin, PluginInfo, PluginState, PluginType

import voice_cipher


class VoicePlugin(AudioProcessorPlugin):
    cipher_class = voice_cipher.Scrambler  # a subclass names its direction
    title = ""
    summary = ""

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
        self.cipher = self.cipher_class(self.key, self.channel_count)
        self.state = PluginState.RUNNING
        return True

    def stop(self):
        self.state = PluginState.INITIALIZED

    def get_info(self):
        return PluginInfo(self.title, "1.0.0", "Sandpipe examples", self.summary, PluginType.PROCESSOR)

    def set_parameter(self, key, value):
        if key == "key":
            self.key = str(value)
            if self.cipher is not None:
                self.cipher = self.cipher_class(self.key, self.channel_count)

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
