"""The earlier pipeline's plugin API, kept so its plugins run in Sandpipe unmodified.

A legacy plugin module defines ``create_plugin()`` returning an ``AudioProcessorPlugin``
(usually a subclass of the one below) and does::

    from base_plugin import AudioProcessorPlugin, PluginInfo, PluginType, PluginState, AudioBuffer

The sandbox always puts this file's directory on ``sys.path``, so that import works wherever the
plugin file lives. Lifecycle as Sandpipe drives it (on the sandbox's processing thread)::

    plugin = create_plugin()
    plugin.set_sample_rate(rate); plugin.set_channel_count(channels)
    plugin.initialize()              # False -> the plugin fails to load
    plugin.set_parameter(key, value) # each value from the config, as a string
    plugin.start()
    plugin.process_audio(buffer)     # per block; False -> the block passes through unchanged
    plugin.stop(); plugin.shutdown()

A ``PluginType.SOURCE`` plugin implements ``read_audio(buffer)`` instead (fill ``buffer.data``;
False -> silence) and may only come first in a chain; a ``PluginType.SINK`` plugin implements
``write_audio(buffer)`` (read ``buffer.data``; the block goes on unchanged) and may only come last.

New plugins should use the ``sandpipe`` SDK instead (typed parameters, state, latency).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

__all__ = [
    "PluginType",
    "PluginState",
    "PluginInfo",
    "AudioBuffer",
    "AudioProcessorPlugin",
]


class PluginType(enum.Enum):
    """What a plugin does with audio. Sandpipe runs PROCESSOR, EFFECT and ANALYZER plugins in a
    chain slot; an ANALYZER normally returns False from ``process_audio`` (audio unchanged).
    A SOURCE (``read_audio``) starts a chain, a SINK (``write_audio``) ends one."""

    PROCESSOR = "processor"
    EFFECT = "effect"
    ANALYZER = "analyzer"
    SOURCE = "source"
    SINK = "sink"


class PluginState(enum.Enum):
    UNINITIALIZED = "uninitialized"
    INITIALIZED = "initialized"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"


@dataclass
class PluginInfo:
    """Describes a plugin.

    ``parameters`` maps a parameter name either to its default value (``{"gain": "1.0"}``) or to
    a description dict with any of ``default``, ``min``, ``max``, ``type`` (``"float"``,
    ``"int"``, ``"bool"``, ``"choice"``, ``"string"``), ``choices``, ``unit`` and
    ``description``.
    """

    name: str
    version: str = "1.0.0"
    description: str = ""
    author: str = ""
    plugin_type: PluginType = PluginType.PROCESSOR
    parameters: Dict[str, Any] = field(default_factory=dict)
    input_channels: int = 2
    output_channels: int = 2
    latency: int = 0


@dataclass
class AudioBuffer:
    """One block of audio: ``data`` is float32 of shape ``(channels, frames)``.

    Plugins process ``data`` in place. ``timestamp`` is the block's start in seconds since the
    stream started.
    """

    data: Any
    sample_rate: int = 48000
    channels: int = 2
    frames: int = 0
    timestamp: float = 0.0


class AudioProcessorPlugin(ABC):
    """Base class of the earlier API. Subclasses implement ``get_info`` and, by their
    ``plugin_type``, ``process_audio``, ``read_audio`` (SOURCE) or ``write_audio`` (SINK);
    everything else has a working default."""

    def __init__(self) -> None:
        self.state = PluginState.UNINITIALIZED
        self.sample_rate = 48000
        self.channel_count = 2
        self.parameters: Dict[str, str] = {}

    @abstractmethod
    def get_info(self) -> PluginInfo:
        """Returns the plugin's description."""

    def process_audio(self, buffer: AudioBuffer) -> bool:
        """Processes ``buffer.data`` in place. Returns False to leave the block unchanged."""
        raise NotImplementedError(f"{type(self).__name__}.process_audio() is not implemented")

    def read_audio(self, buffer: AudioBuffer) -> bool:
        """SOURCE plugins: fills ``buffer.data`` (zeroed before the call) in place. Returns False
        if nothing was produced (the block is silence)."""
        raise NotImplementedError(f"{type(self).__name__}.read_audio() is not implemented")

    def write_audio(self, buffer: AudioBuffer) -> bool:
        """SINK plugins: consumes ``buffer.data`` (only valid during the call: copy what you keep).
        The block goes on unchanged whatever this returns."""
        raise NotImplementedError(f"{type(self).__name__}.write_audio() is not implemented")

    def initialize(self) -> bool:
        """Prepares the plugin after rate and channels are known. False means failure."""
        for key, spec in self.get_info().parameters.items():
            default = spec.get("default") if isinstance(spec, dict) else spec
            if default is not None and key not in self.parameters:
                self.parameters[key] = str(default)
        self.state = PluginState.INITIALIZED
        return True

    def start(self) -> bool:
        self.state = PluginState.RUNNING
        return True

    def stop(self) -> bool:
        self.state = PluginState.STOPPED
        return True

    def shutdown(self) -> None:
        self.state = PluginState.UNINITIALIZED

    def set_sample_rate(self, rate: int) -> None:
        self.sample_rate = int(rate)

    def set_channel_count(self, count: int) -> None:
        self.channel_count = int(count)

    def set_parameter(self, key: str, value: str) -> bool:
        """Stores a parameter (values are strings). Returns False for an unknown key."""
        self.parameters[key] = value
        return True

    def get_parameter(self, key: str) -> Optional[str]:
        return self.parameters.get(key)

    def get_state(self) -> PluginState:
        return self.state
