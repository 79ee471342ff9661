"""The earlier pipeline's plugin API (``base_plugin``), so its plugins run in Sandpipe unmodified.

Written from the interface those plugins use (/work/shared/earlier-python-api.md): names, enum
values, signatures and defaults are the earlier SDK's. Sandpipe itself never relies on these
classes: it drives a plugin by what its object does (a plugin folder may ship its own
``base_plugin.py``, found first on its ``sys.path``), and this module is only what a plugin copied
without one imports. How Sandpipe calls a plugin, in order, is in docs/plugin-guide-python.md
("Plugins of the earlier pipeline").

Nothing here keeps state of its own after ``__init__``: a plugin's attributes (``self.state``,
``self.sample_rate``, ``self.channels``, ...) are the plugin's.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

__all__ = [
    "PluginType",
    "PluginState",
    "PluginInfo",
    "AudioBuffer",
    "AudioSourceCallback",
    "BasePlugin",
    "AudioProcessorPlugin",
    "AudioSourcePlugin",
    "AudioSinkPlugin",
]


class PluginType(enum.Enum):
    AUDIO_SOURCE = "AudioSource"
    AUDIO_SINK = "AudioSink"
    PROCESSOR = "Processor"


class PluginState(enum.Enum):
    UNLOADED = "Unloaded"
    LOADED = "Loaded"
    INITIALIZED = "Initialized"
    RUNNING = "Running"
    ERROR = "Error"


class PluginInfo:
    """What ``get_info()`` returns. ``plugin_type`` is stored as ``type``."""

    def __init__(self, name, version, author, description, plugin_type, api_version=1):
        self.name = name
        self.version = version
        self.author = author
        self.description = description
        self.type = plugin_type
        self.api_version = api_version

    def __repr__(self) -> str:
        return (
            f"PluginInfo(name={self.name!r}, version={self.version!r}, author={self.author!r}, "
            f"description={self.description!r}, plugin_type={self.type!r}, api_version={self.api_version!r})"
        )


class AudioBuffer:
    """One block: ``data`` is float32 of shape ``(channels, frames)``, changed in place."""

    def __init__(self, channels, frame_count):
        self.data = np.zeros((int(channels), int(frame_count)), dtype=np.float32)

    def get_channel_data(self, channel):
        return self.data[channel]

    def get_frame_count(self):
        return self.data.shape[1]

    def get_channel_count(self):
        return self.data.shape[0]

    def clear(self):
        self.data.fill(0.0)

    def copy_from(self, other):
        np.copyto(self.data, other.data, casting="unsafe")


AudioSourceCallback = Callable[[AudioBuffer], None]


class BasePlugin(ABC):
    def __init__(self):
        self.state = PluginState.UNLOADED

    @abstractmethod
    def initialize(self) -> bool: ...

    @abstractmethod
    def shutdown(self): ...

    @abstractmethod
    def start(self) -> bool: ...

    @abstractmethod
    def stop(self): ...

    @abstractmethod
    def get_info(self) -> PluginInfo: ...

    @abstractmethod
    def get_type(self) -> PluginType: ...

    @abstractmethod
    def set_parameter(self, key: str, value: str): ...

    @abstractmethod
    def get_parameter(self, key: str) -> str: ...

    def get_state(self):
        return self.state


class _AudioPlugin(BasePlugin):
    """What processors, sources and sinks share: the rate and channel pairs."""

    @abstractmethod
    def get_sample_rate(self): ...

    @abstractmethod
    def get_channel_count(self): ...

    @abstractmethod
    def set_sample_rate(self, rate): ...

    @abstractmethod
    def set_channel_count(self, channels): ...

    def get_channels(self):
        return self.get_channel_count()

    def set_channels(self, channels):
        self.set_channel_count(channels)


class AudioProcessorPlugin(_AudioPlugin):
    def get_type(self) -> PluginType:
        return PluginType.PROCESSOR

    @abstractmethod
    def process_audio(self, buffer) -> bool: ...

    def get_processing_latency(self) -> float:
        """Seconds of algorithmic latency."""
        return 0.0


class AudioSourcePlugin(_AudioPlugin):
    def get_type(self) -> PluginType:
        return PluginType.AUDIO_SOURCE

    @abstractmethod
    def set_audio_callback(self, callback): ...

    @abstractmethod
    def read_audio(self, buffer) -> bool: ...

    def get_buffer_size(self):
        return 512

    def set_buffer_size(self, size):
        pass


class AudioSinkPlugin(_AudioPlugin):
    def get_type(self) -> PluginType:
        return PluginType.AUDIO_SINK

    @abstractmethod
    def write_audio(self, buffer) -> bool: ...

    @abstractmethod
    def get_buffer_size(self): ...

    @abstractmethod
    def set_buffer_size(self, size): ...

    @abstractmethod
    def get_available_space(self) -> int:
        """Frames it can take now."""
