"""Decrypts what voice_scrambler.py sent (the RX side of docs/encrypted-voice.md).

Written against the earlier pipeline's plugin API (base_plugin, create_plugin()), as its users'
plugins are: Sandpipe runs it unmodified, fail-closed by default (docs/encrypted-voice.md). The
plugin is voice_plugin.py and the cipher voice_cipher.py, both beside this file; parameter `key`
(text), the same on both ends.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # base_plugin
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # voice_plugin, voice_cipher

import voice_cipher  # noqa: E402
from voice_plugin import VoicePlugin  # noqa: E402


class VoiceDescrambler(VoicePlugin):
    cipher_class = voice_cipher.Descrambler
    title = "Voice descrambler"
    summary = "Decrypts what voice_scrambler.py sent (the RX side of docs/encrypted-voice.md)."


def create_plugin():
    return VoiceDescrambler()
