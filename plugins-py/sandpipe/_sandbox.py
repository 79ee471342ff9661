"""Glue between the sandbox executable (C++) and one plugin file. Private: not for plugins.

The sandbox calls, on its one processing thread:

* ``install_stdio(log)`` once: ``sys.stdout``/``sys.stderr`` become line writers that call
  ``log(stream, line)`` (1 = stdout, 2 = stderr); the sandbox sends each line to the host.
* ``preload(path)`` at most once, before ``load`` (a spare sandbox): imports the file ahead of
  time and runs nothing of the plugin but its module's top level (no instance is made: a spare
  that never takes over has no side effects beyond the import).
* ``load(path, rate, channels, max_frames, params, state, inspect)`` -> a ``Session``: imports
  the file (or takes the preloaded module if the file still has the contents it was imported
  from), tells the two plugin APIs apart by behaviour, and runs the plugin's lifecycle up to its
  first block. With ``inspect`` it only makes the instance and asks what it is (``sandpipe
  inspect``): no ``prepare``/``initialize``/``start``, so a recording sink opens nothing.
* per block ``session.process(block)``; its result is interpreted in C++: None or True ->
  processed, False -> not processed by the plugin (``passthrough``: the slot's on-failure decides
  what leaves it), anything else -> ``session.accept(block, result)``. A source's ``process``
  fills the block and returns True; a sink's reads it and returns False (the block goes on as it
  came in). ``session.info()["role"]`` says which.
* ``session.set_param``, ``session.get_state``, ``session.shutdown`` between blocks;
  ``set_param`` returns the plugin's latency, or (an earlier-API plugin) ``(latency, read_back)``
  with what ``get_parameter`` answers after the change, which the node publishes.
* ``format_error(exc)`` -> ``(message, traceback)`` for anything that raised.
* ``load_group(name, members, rate, channels, max_frames, state)`` -> a ``GroupSession`` instead
  of ``load`` for a sandbox group (issue 17): several processors in this one process, each run
  in chain order on the one block. Its ``process`` returns None, or a list of
  ``(member, message, traceback)`` for the members that raised in that block (each already
  replaced by its on-failure: the block as a whole is processed). Errors of a member's load,
  parameter, rate change or state are LoadErrors naming it, with its index as ``member``.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import struct
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import sandpipe
from sandpipe import Param, ParamError, Plugin


# numpy computes float limits lazily and warns ("smallest subnormal ... is zero") when that first
# happens with denormals flushed, which the sandbox does before loading a plugin. Compute them now.
for _t in (np.float16, np.float32, np.float64, np.longdouble):
    np.finfo(_t)
del _t


class LoadError(Exception):
    """The file is not a plugin Sandpipe can run; the message says why (no traceback needed)."""


# --------------------------------------------------------------------------------------------
# stdout / stderr


# A sandbox group's member whose code runs now, as its log lines' prefix ("[eq] "): set around
# each call into a member (GroupSession), empty otherwise (a single plugin's lines are as written).
_member_prefix = ""


class _LineWriter(io.TextIOBase):
    """A text stream that hands complete lines to the sandbox's log function."""

    _max_pending = 8192

    def __init__(self, stream: int, log: Callable[[int, str], None]) -> None:
        super().__init__()
        self._stream = stream
        self._log = log
        self._pending = ""
        self._prefix = ""  # the group member that began the pending line ("[eq] "), see _member_prefix

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if not self._pending:
            self._prefix = _member_prefix
        text = self._pending + s
        lines = text.split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._log(self._stream, self._prefix + line)
            self._prefix = _member_prefix  # the next line begins in this write
        if len(self._pending) > self._max_pending:
            self._log(self._stream, self._prefix + self._pending)
            self._pending = ""
        return len(s)

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, ""
            self._log(self._stream, self._prefix + pending)


def install_stdio(log: Callable[[int, str], None]) -> None:
    sys.stdout = _LineWriter(1, log)
    sys.stderr = _LineWriter(2, log)


def flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a plugin may have replaced the streams
            pass


# --------------------------------------------------------------------------------------------
# errors

_HERE = os.path.abspath(__file__)
_SDK = os.path.abspath(sandpipe.__file__)


def _is_glue_frame(filename: str) -> bool:
    return os.path.abspath(filename) in (_HERE, _SDK) or filename.startswith("<frozen importlib")


def format_error(exc: BaseException) -> Tuple[str, str]:
    """Returns ``(one-line message, traceback text)``; the traceback leaves out this module's
    and importlib's frames so it starts at the plugin's own code."""
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, LoadError):
        if exc.__cause__ is None:
            return str(exc), ""
        # A plugin call during the load raised: say which, then the plugin's own error.
        cause, tb = format_error(exc.__cause__)
        return f"{exc}: {cause}", tb
    try:
        te = traceback.TracebackException.from_exception(exc)
        frames = [f for f in te.stack if not _is_glue_frame(f.filename)]
        if not frames and isinstance(exc, ParamError):
            return message, ""  # a value refused by its declaration: the message says it all
        te.stack = traceback.StackSummary.from_list(frames)
        return message, "".join(te.format())
    except Exception:  # noqa: BLE001 - formatting must never fail
        return message, ""


# --------------------------------------------------------------------------------------------
# loading


def _import_file(path: str) -> Tuple[Any, bytes]:
    """Imports the plugin file as a fresh module: ``(module, source it was compiled from)``."""
    if not os.path.isabs(path):
        raise LoadError(f"{path}: not an absolute path")
    if not os.path.isfile(path):
        raise LoadError(f"{path}: no such file")
    with open(path, "rb") as f:
        source = f.read()
    # The plugin's own folder first, so a plugin split over files imports its siblings, and a
    # folder that ships its own base_plugin.py gets that one, not Sandpipe's (which stays on
    # the path after it, for a plugin copied without one).
    folder = os.path.dirname(path)
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else "sandpipe_plugin"
    # A sandbox group imports each member's file as a module of its own (the same file twice,
    # two files named alike): sandpipe_plugin_2, _3 ... after the first.
    number = 1
    while name in sys.modules and name.startswith("sandpipe_plugin"):
        number += 1
        name = f"sandpipe_plugin_{number}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        # What SourceFileLoader.exec_module does, from the bytes read above: a later load compares
        # the file with exactly the source this module came from.
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module, source


# (path, source, module) imported by preload() ahead of the load, or None.
_preloaded: Optional[Tuple[str, bytes, Any]] = None


def preload(path: str) -> bool:
    """Imports the plugin file ahead of its load (a spare sandbox: the load then only instantiates).

    A file that fails to import is forgotten: the load imports it again and reports the error.
    """
    global _preloaded
    _preloaded = None
    try:
        module, source = _import_file(path)
    except BaseException:  # noqa: B036 - a module's top level may raise anything, even SystemExit
        return False
    _preloaded = (path, source, module)
    return True


def _take_preloaded(path: str) -> Optional[Any]:
    """The preloaded module if it was imported from `path` with the file's current contents."""
    global _preloaded
    entry, _preloaded = _preloaded, None
    if entry is None:
        return None
    preloaded_path, source, module = entry
    try:
        with open(path, "rb") as f:
            current = f.read()
    except OSError:
        current = None
    if preloaded_path == path and current == source:
        return module
    # The file changed since (a reload): its new contents are imported as a new module.
    if sys.modules.get(module.__name__) is module:
        del sys.modules[module.__name__]
    return None


def _sdk_class(module: Any, path: str) -> Optional[type]:
    chosen = getattr(module, "plugin_class", None)
    if chosen is not None:
        if not (isinstance(chosen, type) and issubclass(chosen, Plugin)):
            raise LoadError(f"{path}: plugin_class is not a subclass of sandpipe.Plugin")
        return chosen
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Plugin) and v is not Plugin and v.__module__ == module.__name__
    ]
    # An intermediate base class defined in the same file is not the plugin: keep the leaves.
    leaves = [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]
    if len(leaves) > 1:
        names = ", ".join(sorted(c.__name__ for c in leaves))
        raise LoadError(f"{path}: several sandpipe.Plugin subclasses ({names}); keep one or set plugin_class = ...")
    return leaves[0] if leaves else None


def load(
    path: str,
    rate: float,
    channels: int,
    max_frames: int,
    params: Sequence[Tuple[str, Any]],
    state: bytes,
    inspect: bool = False,
) -> "Session":
    module = _take_preloaded(path)
    preloaded = module is not None
    if module is None:
        module, _ = _import_file(path)
    session = _instantiate(module, path, rate, channels, max_frames, params, state, inspect)
    session.preloaded = preloaded
    return session


def _instantiate(
    module: Any,
    path: str,
    rate: float,
    channels: int,
    max_frames: int,
    params: Sequence[Tuple[str, Any]],
    state: bytes,
    inspect: bool = False,
) -> "Session":
    factory = getattr(module, "create_plugin", None)
    if callable(factory):
        obj = _calling(path, "create_plugin()", factory)
        if isinstance(obj, Plugin):
            return SdkSession(obj, rate, channels, max_frames, params, state, inspect)
        return LegacySession(obj, module, path, rate, channels, max_frames, params, inspect)
    cls = _sdk_class(module, path)
    if cls is None:
        raise LoadError(
            f"{path}: no plugin found: the file defines no subclass of sandpipe.Plugin "
            "and no create_plugin() function (the earlier pipeline's API)"
        )
    return SdkSession(cls(), rate, channels, max_frames, params, state, inspect)


def _check_latency(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= 1 << 20:
        raise ParamError(f"latency must be an int in 0 .. {1 << 20} frames, got {value!r}")
    return int(value)


_PLUGIN_ROLES = ("processor", "source", "sink")


def _source_process(produce: Callable[[Any], Any]) -> Callable[[np.ndarray], bool]:
    """``process`` for a source: the block starts as silence and is whatever ``produce`` put
    in it (or returned); an explicit falsy result means nothing was produced: silence."""

    def process(block: np.ndarray) -> bool:
        block.fill(0.0)
        result = produce(block)
        if result is None or result is True:
            return True
        if isinstance(result, np.ndarray):
            Session.accept(block, result)
        elif not result:
            block.fill(0.0)
        return True

    return process


def _sink_process(consume: Callable[[Any], Any]) -> Callable[[np.ndarray], bool]:
    """``process`` for a sink: the block is read, and passes on unchanged (False: the host
    outputs the block as it came in, whatever the sink did to the shared copy)."""

    def process(block: np.ndarray) -> bool:
        consume(block)
        return False

    return process


class Session:
    api = ""
    role = "processor"
    preloaded = False  # the module came from preload(), not imported at the load
    process: Callable[[Any], Any]

    def info(self) -> Dict[str, Any]:
        raise NotImplementedError

    def set_param(self, key: str, value: Any) -> int:
        raise NotImplementedError

    def set_rate(self, rate: float) -> int:
        """The graph's rate changed: prepares the plugin for `rate` between two blocks, keeping
        its parameters and state. Returns its latency (frames) at the new rate."""
        raise NotImplementedError

    def get_state(self) -> bytes:
        return b""

    def shutdown(self) -> None:
        pass

    @staticmethod
    def accept(block: np.ndarray, result: Any) -> None:
        """Copies an array returned by process() into the block, after checking its shape."""
        out = np.asarray(result)
        if out.shape != block.shape:
            raise ValueError(f"process() returned an array of shape {out.shape}; expected {block.shape} or None")
        np.copyto(block, out, casting="same_kind")


class SdkSession(Session):
    api = "sdk"

    def __init__(
        self,
        plugin: Plugin,
        rate: float,
        channels: int,
        max_frames: int,
        params: Sequence[Tuple[str, Any]],
        state: bytes,
        inspect: bool = False,
    ) -> None:
        self.plugin = plugin
        self.channels = channels
        self.max_frames = max_frames
        cls = type(plugin)
        self.declared: Dict[str, Param] = dict(cls.params)
        given: Dict[str, Any] = {}
        for key, value in params:
            if key not in self.declared:
                raise ParamError(self._unknown(key))
            given[key] = self.declared[key].coerce(value, key)
        # Every parameter's value now, applied again after a rate change's prepare().
        self.values: Dict[str, Any] = {key: given.get(key, param.default) for key, param in self.declared.items()}
        if not inspect:
            # The SDK's lifecycle: prepare() is its initialize()/start(), then the parameters and
            # the state of a restarted instance. An inspection constructs the class only.
            self._prepare(rate, bytes(state))
        self.latency = _check_latency(plugin.latency)
        self.role = str(getattr(cls, "role", "processor"))
        if self.role not in _PLUGIN_ROLES:
            raise LoadError(f"{cls.__name__}.role must be one of {', '.join(_PLUGIN_ROLES)}, not {self.role!r}")
        if self.role == "source":
            self.process = _source_process(plugin.generate)
        elif self.role == "sink":
            self.process = _sink_process(plugin.consume)
        else:
            self.process = plugin.process

    def _prepare(self, rate: float, state: bytes) -> None:
        self.plugin.prepare(rate, self.channels, self.max_frames)
        for key, value in self.values.items():
            self.plugin.set_param(key, value)
        if state:
            self.plugin.set_state(state)

    def set_rate(self, rate: float) -> int:
        # As a restart at the new rate would, in this process: prepare(), the parameters as they
        # are now, then the state the plugin had (a cipher's counter, a delay line's content).
        self._prepare(rate, self.get_state())
        self.latency = _check_latency(self.plugin.latency)
        return self.latency

    def _unknown(self, key: str) -> str:
        known = ", ".join(self.declared) or "none"
        return f"unknown parameter {key!r} (parameters: {known})"

    def info(self) -> Dict[str, Any]:
        cls = type(self.plugin)
        doc = (cls.__doc__ or "").strip().splitlines()
        params = []
        for key, p in self.declared.items():
            params.append(
                {
                    "key": key,
                    "label": p.label or key,
                    "unit": p.unit,
                    "kind": p.kind,
                    "min": p.min,
                    "max": p.max,
                    "default": p.default,
                    "choices": list(p.choices),
                }
            )
        return {
            "api": "sdk",
            "name": cls.name or cls.__name__,
            "version": str(cls.version),
            "description": cls.description or (doc[0] if doc else ""),
            "role": self.role,
            "latency": self.latency,
            "params": params,
        }

    def set_param(self, key: str, value: Any) -> int:
        param = self.declared.get(key)
        if param is None:
            raise ParamError(self._unknown(key))
        coerced = param.coerce(value, key)
        self.plugin.set_param(key, coerced)
        self.values[key] = coerced
        self.latency = _check_latency(self.plugin.latency)
        return self.latency

    def get_state(self) -> bytes:
        data = self.plugin.get_state()
        if data is None:
            return b""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"get_state() must return bytes, not {type(data).__name__}")
        return bytes(data)


# --------------------------------------------------------------------------------------------
# the earlier pipeline's API (/work/shared/earlier-python-api.md; docs/plugin-guide-python.md,
# "Plugins of the earlier pipeline"). The plugin object is judged by what it does, never by
# isinstance against a base_plugin: a folder may ship its own base_plugin.py.

# get_type().value / get_info().type.value -> the slot's role.
_EARLIER_ROLES = {"audiosource": "source", "audiosink": "sink", "processor": "processor"}

# Called on every plugin whatever its role (set_channels or set_channel_count: either will do).
_EARLIER_METHODS = ("get_info", "initialize", "start", "stop", "shutdown", "set_parameter", "get_parameter",
                    "set_sample_rate")
_EARLIER_ROLE_METHODS = {
    "processor": ("process_audio",),
    "source": ("read_audio",),
    "sink": ("get_available_space", "write_audio"),
}

# Attributes a plugin keeps for its lifecycle, not parameters (see _discover_params).
_NOT_PARAMS = frozenset(("state", "sample_rate", "channels", "channel_count", "buffer_size", "frame_count"))
_MAX_DISCOVERED = 64


def _earlier_role(value: Any) -> Optional[str]:
    """"processor" / "source" / "sink" for a PluginType member (any enum whose value is the
    earlier API's, or the bare string), None for anything else."""
    raw = getattr(value, "value", value)
    if not isinstance(raw, str):
        return None
    return _EARLIER_ROLES.get(raw.replace("_", "").lower())


def _earlier_text(value: Any) -> str:
    """Values reach set_parameter as strings, written the way a person would."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def _as_number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _calling(path: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` during the load: anything it raises becomes a LoadError naming the file
    and the call, with the plugin's traceback (format_error shows the cause's)."""
    try:
        return fn(*args)
    except BaseException as exc:  # noqa: B036 - a plugin may raise anything, even SystemExit
        raise LoadError(f"{path}: {what} raised") from exc


class _BlockBuffer:
    """What ``process_audio``/``read_audio``/``write_audio`` get when the plugin's own
    ``AudioBuffer`` cannot wrap the shared block: every member of the earlier API's
    ``AudioBuffer``, over the block itself (no copy)."""

    __slots__ = ("data",)

    def __init__(self, block: np.ndarray) -> None:
        self.data = block

    def get_channel_data(self, channel: int) -> np.ndarray:
        return self.data[channel]

    def get_frame_count(self) -> int:
        return int(self.data.shape[1])

    def get_channel_count(self) -> int:
        return int(self.data.shape[0])

    def clear(self) -> None:
        self.data.fill(0.0)

    def copy_from(self, other: Any) -> None:
        np.copyto(self.data, other.data, casting="unsafe")


_BUFFER_MEMBERS = ("get_channel_data", "get_frame_count", "get_channel_count", "clear", "copy_from")


def _wrap_block(buffer_type: Any, block: np.ndarray) -> Any:
    """An AudioBuffer whose ``data`` is `block`: the plugin's own class (the one its
    ``base_plugin`` defines, so its methods and isinstance checks hold) when it can be built as
    ``AudioBuffer(channels, frame_count)`` and given the block as ``data``, else _BlockBuffer."""
    if isinstance(buffer_type, type):
        try:
            buffer = buffer_type(block.shape[0], block.shape[1])
            buffer.data = block
            if buffer.data is block and all(callable(getattr(buffer, m, None)) for m in _BUFFER_MEMBERS):
                return buffer
        except Exception:  # noqa: BLE001 - not a buffer we can use: ours will do
            pass
    return _BlockBuffer(block)


class LegacySession(Session):
    """Drives an earlier-API plugin in the earlier host's order: ``create_plugin()`` (done by the
    caller) → ``get_info()``/``get_type()`` → ``initialize()`` → ``set_sample_rate`` /
    ``set_channels`` (sources and sinks: ``set_buffer_size``) → ``set_parameter`` per config
    key → ``start()`` → per block ``process_audio`` | ``read_audio`` | ``get_available_space``
    + ``write_audio`` → ``stop()``, ``shutdown()``. With ``inspect`` it stops after
    ``get_info()``/``get_type()`` (and ``get_parameter`` to list parameters)."""

    api = "legacy"

    def __init__(
        self,
        obj: Any,
        module: Any,
        path: str,
        rate: float,
        channels: int,
        max_frames: int,
        params: Sequence[Tuple[str, Any]],
        inspect: bool = False,
    ) -> None:
        self.obj = obj
        self.path = path
        self.rate = rate
        self.started = False
        self._buffers: Dict[int, Tuple[Any, np.ndarray]] = {}
        base = sys.modules.get("base_plugin")
        self._buffer_type = getattr(module, "AudioBuffer", None) or getattr(base, "AudioBuffer", None)
        self.plugin_info = self._read_info()
        self.role = self._read_role()
        self._check_methods()
        self.config_params = [(str(k), v) for k, v in params]
        self.latency = 0
        if inspect:
            self._params = self._describe_params()
            return
        if _calling(path, "initialize()", obj.initialize) is False:
            raise LoadError(f"{path}: initialize() returned False: the plugin failed to load")
        try:
            self._prepare(channels, max_frames)
            if _calling(path, "start()", obj.start) is False:
                raise LoadError(f"{path}: start() returned False: the plugin cannot run")
        except BaseException:
            # Initialised but never started: give it its shutdown() (what it opened is released).
            try:
                obj.shutdown()
            except BaseException:  # noqa: B036 - the load error is what is reported
                pass
            raise
        self.started = True
        try:
            self.latency = self._latency()
            self._params = self._describe_params()
        except BaseException:
            try:
                self.shutdown()  # started: stop() and shutdown() before the load error
            except BaseException:  # noqa: B036 - the load error is what is reported
                pass
            raise
        if self.role == "source":
            self.process = _source_process(self._read_audio)
        elif self.role == "sink":
            self.process = _sink_process(self._write_audio)

    # --- load ---------------------------------------------------------------------------------

    def _read_info(self) -> Any:
        get_info = getattr(self.obj, "get_info", None)
        if not callable(get_info):
            raise LoadError(
                f"{self.path}: create_plugin() returned a {type(self.obj).__name__}, which has no get_info() "
                "(an earlier-API plugin is an AudioProcessorPlugin, AudioSourcePlugin or AudioSinkPlugin)"
            )
        info = _calling(self.path, "get_info()", get_info)
        missing = [a for a in ("name", "type") if not hasattr(info, a)]
        if missing:
            raise LoadError(
                f"{self.path}: get_info() returned {type(info).__name__} {info!r:.80}, not a PluginInfo "
                f"(no {' or '.join(missing)}; expected PluginInfo(name, version, author, description, plugin_type))"
            )
        return info

    def _read_role(self) -> str:
        get_type = getattr(self.obj, "get_type", None)
        if callable(get_type):
            ptype, source = _calling(self.path, "get_type()", get_type), "get_type()"
        else:
            ptype, source = getattr(self.plugin_info, "type", None), "get_info().type"
        role = _earlier_role(ptype)
        if role is None:
            raise LoadError(
                f"{self.path}: {source} is {ptype!r}, not a PluginType "
                "(AUDIO_SOURCE = 'AudioSource', AUDIO_SINK = 'AudioSink' or PROCESSOR = 'Processor')"
            )
        return role

    def _check_methods(self) -> None:
        needed = list(_EARLIER_METHODS) + list(_EARLIER_ROLE_METHODS[self.role])
        missing = [m for m in needed if not callable(getattr(self.obj, m, None))]
        if not callable(getattr(self.obj, "set_channels", None)) and not callable(
            getattr(self.obj, "set_channel_count", None)
        ):
            missing.append("set_channels")
        if missing:
            raise LoadError(
                f"{self.path}: create_plugin() returned a {self.role} ({type(self.obj).__name__}) without "
                + ", ".join(f"{m}()" for m in missing)
            )

    def _set_sample_rate(self) -> str:
        """``set_sample_rate(self.rate)``, a whole rate as an int as the earlier host passed it;
        returns the call as written, for messages."""
        rate = int(self.rate) if float(self.rate).is_integer() else self.rate
        call = f"set_sample_rate({rate})"
        _calling(self.path, call, self.obj.set_sample_rate, rate)
        return call

    def _prepare(self, channels: int, max_frames: int) -> None:
        obj, path = self.obj, self.path
        self._set_sample_rate()
        set_channels = getattr(obj, "set_channels", None)
        if not callable(set_channels):
            set_channels = obj.set_channel_count
        _calling(path, f"set_channels({channels})", set_channels, channels)
        set_buffer_size = getattr(obj, "set_buffer_size", None)
        if self.role != "processor" and callable(set_buffer_size):
            _calling(path, f"set_buffer_size({max_frames})", set_buffer_size, max_frames)
        for key, value in self.config_params:
            text = _earlier_text(value)
            if _calling(path, f"set_parameter({key!r}, {text!r})", obj.set_parameter, key, text) is False:
                raise LoadError(f"{path}: set_parameter({key!r}, {text!r}) returned False: the plugin refused it")

    def _latency(self) -> int:
        getter = getattr(self.obj, "get_processing_latency", None)
        seconds = getter() if callable(getter) else 0.0
        value = _as_number(seconds)
        if value is None or value < 0:
            raise LoadError(f"{self.path}: get_processing_latency() returned {seconds!r}, not seconds >= 0")
        return _check_latency(int(round(value * self.rate)))

    # --- parameters ---------------------------------------------------------------------------

    def _current(self, key: str) -> Optional[str]:
        """get_parameter(key) if it answers a non-empty string."""
        try:
            value = self.obj.get_parameter(key)
        except Exception:  # noqa: BLE001 - a key it does not know
            return None
        return value if isinstance(value, str) and value != "" else None

    def _discover(self) -> List[str]:
        """Keys the config does not give that the plugin answers with get_parameter(): its public
        attributes and the string keys of its dict attributes (``self.gain``,
        ``self.params = {"gain": "1.0"}``), lifecycle attributes left out."""
        given = {k for k, _ in self.config_params}
        candidates: List[str] = []
        for name, value in list(vars(self.obj).items()) if hasattr(self.obj, "__dict__") else []:
            if isinstance(value, dict):
                candidates.extend(k for k in value if isinstance(k, str))
            elif not callable(value):
                candidates.append(name)
        found: List[str] = []
        for key in candidates:
            if (
                key in given
                or key in found
                or key in _NOT_PARAMS
                or key.startswith("_")
                or not key.isidentifier()
                or self._current(key) is None
            ):
                continue
            found.append(key)
            if len(found) >= _MAX_DISCOVERED:
                break
        return found

    def _describe_params(self) -> List[Dict[str, Any]]:
        """Each config key typed by its config value (number, boolean or text) and each key the
        plugin answers, typed by its answer; the default shown is what get_parameter() reads
        back now, else the config's value."""
        out: List[Dict[str, Any]] = []
        for key, value in self.config_params:
            if isinstance(value, bool):
                kind = "boolean"
            elif isinstance(value, str) or _as_number(value) is None:
                kind = "text"
            else:
                kind = "number"
            out.append(self._param(key, kind, self._current(key), value))
        for key in self._discover():
            answer = self._current(key) or ""
            if answer.lower() in ("true", "false"):
                kind = "boolean"
            else:
                kind = "number" if _as_number(answer) is not None else "text"
            out.append(self._param(key, kind, answer, answer))
        return out

    @staticmethod
    def _param(key: str, kind: str, current: Optional[str], given: Any) -> Dict[str, Any]:
        if kind == "number":
            default: Any = _as_number(current)
            if default is None:
                default = _as_number(given) or 0.0
        elif kind == "boolean":
            text = current if current is not None else _earlier_text(given)
            default = text.strip().lower() in ("true", "1", "on", "yes")
        else:
            default = current if current is not None else _earlier_text(given)
        return {
            "key": key,
            "label": key,
            "unit": "",
            "kind": kind,
            "min": -math.inf,
            "max": math.inf,
            "default": default,
            "choices": [],
        }

    # --- blocks -------------------------------------------------------------------------------

    def _buffer_for(self, block: np.ndarray) -> Any:
        # One buffer per cached view of the shared segment: nothing is built per block.
        entry = self._buffers.get(id(block))
        if entry is None or entry[1] is not block:
            entry = (_wrap_block(self._buffer_type, block), block)
            self._buffers[id(block)] = entry
        return entry[0]

    def _take_back(self, buffer: Any, block: np.ndarray) -> None:
        """A plugin that assigned a new array to ``buffer.data`` (``buffer.data = y``) gets it
        copied into the block, and the buffer points at the block again for the next call."""
        if buffer.data is not block:
            data, buffer.data = buffer.data, block
            self.accept(block, data)

    def process(self, block: np.ndarray) -> bool:
        buffer = self._buffer_for(block)
        result = self.obj.process_audio(buffer)
        self._take_back(buffer, block)
        # False: not processed (the slot's on-failure decides what leaves it). No return
        # statement (None) counts as processed.
        return result is None or bool(result)

    def _read_audio(self, block: np.ndarray) -> Any:
        buffer = self._buffer_for(block)
        result = self.obj.read_audio(buffer)
        self._take_back(buffer, block)
        return True if result is None else bool(result)  # False: no audio this block (silence)

    def _write_audio(self, block: np.ndarray) -> Any:
        buffer = self._buffer_for(block)
        self.obj.get_available_space()
        return self.obj.write_audio(buffer)

    # --- between blocks -----------------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        pi = self.plugin_info
        return {
            "api": "legacy",
            "name": str(getattr(pi, "name", "") or type(self.obj).__name__),
            "version": str(getattr(pi, "version", "") or ""),
            "description": str(getattr(pi, "description", "") or ""),
            "role": self.role,
            "latency": self.latency,
            "params": self._params,
        }

    def set_param(self, key: str, value: Any) -> Tuple[int, Any]:
        """(latency, read-back): the read-back is what get_parameter(key) answers now, typed as the
        parameter is published (number, boolean or text); the value sent if it answers nothing
        (or, for a number, no number)."""
        text = _earlier_text(value)
        if self.obj.set_parameter(key, text) is False:
            raise ParamError(f"the plugin refused {key} = {text!r} (set_parameter returned False)")
        self.latency = self._latency()
        current = self._current(key)
        kind = next((p["kind"] for p in self._params if p["key"] == key), "text")
        if current is None or (kind == "number" and _as_number(current) is None):
            return self.latency, value
        return self.latency, self._param(key, kind, current, value)["default"]

    def set_rate(self, rate: float) -> int:
        """``stop()``, ``set_sample_rate(rate)``, ``start()``: the earlier host set the rate of a
        stopped plugin; the plugin object, its parameters and whatever it holds stay."""
        obj, path = self.obj, self.path
        if self.started:
            self.started = False
            _calling(path, "stop()", obj.stop)
        self.rate = rate
        call = self._set_sample_rate()
        if _calling(path, "start()", obj.start) is False:
            raise LoadError(f"{path}: start() returned False after {call}: the plugin cannot run")
        self.started = True
        self.latency = self._latency()
        return self.latency

    def shutdown(self) -> None:
        """``stop()`` then ``shutdown()``, each called even if the other raised."""
        if not self.started:
            return
        self.started = False
        errors: List[BaseException] = []
        for method in (self.obj.stop, self.obj.shutdown):
            try:
                method()
            except BaseException as exc:  # noqa: B036 - the other call still runs
                errors.append(exc)
        if errors:
            raise errors[0]



# --------------------------------------------------------------------------------------------
# sandbox groups (issue 17): several processors in one sandbox, one host hop per block

# A group's state: this magic, the member count, then each member's state (each a u32 length,
# then its bytes), little-endian, in member order. Empty: no member has a state.
_GROUP_STATE_MAGIC = b"SPGROUP1"
_U32 = struct.Struct("<I")

# GroupMember.onFailure as the C++ passes it.
_MEMBER_FAILURES = ("auto", "bypass", "mute")


def pack_group_state(states: Sequence[bytes]) -> bytes:
    parts = [_GROUP_STATE_MAGIC, _U32.pack(len(states))]
    for state in states:
        parts += [_U32.pack(len(state)), bytes(state)]
    return b"".join(parts)


def unpack_group_state(blob: bytes, count: int) -> List[bytes]:
    """Each of `count` members' state from a group's blob; raises LoadError for a blob that is
    not one (another plugin's state, a group of another size, truncated)."""
    if not blob:
        return [b""] * count
    head = len(_GROUP_STATE_MAGIC) + _U32.size
    if len(blob) < head or blob[: len(_GROUP_STATE_MAGIC)] != _GROUP_STATE_MAGIC:
        raise LoadError("the group's state is not a sandbox group's state (no SPGROUP1 header)")
    (stored,) = _U32.unpack_from(blob, len(_GROUP_STATE_MAGIC))
    if stored != count:
        raise LoadError(f"the group's state holds {stored} members' states; the group has {count} members")
    states: List[bytes] = []
    at = head
    for index in range(count):
        if at + _U32.size > len(blob):
            raise LoadError(f"the group's state is truncated (at member {index})")
        (size,) = _U32.unpack_from(blob, at)
        at += _U32.size
        if at + size > len(blob):
            raise LoadError(f"the group's state is truncated (member {index} holds {size} bytes)")
        states.append(bytes(blob[at : at + size]))
        at += size
    if at != len(blob):
        raise LoadError(f"the group's state has {len(blob) - at} bytes after its last member's")
    return states


def _member_error(index: int, where: str, exc: Optional[BaseException] = None, path: str = "") -> LoadError:
    """A LoadError about a group's member, starting with `where` ("member 'eq' (/p/eq.py)"), with
    the member's index as ``member``. With `exc` (what the member raised) format_error shows its
    message and traceback after `where`; a LoadError's own loses its leading path (`where` has it)."""
    if exc is None:
        error, cause = LoadError(where), None
    elif isinstance(exc, LoadError):
        text = str(exc)
        if path and text.startswith(path + ": "):
            text = text[len(path) + 2 :]
        error, cause = LoadError(f"{where}: {text}"), exc.__cause__
    else:
        error, cause = LoadError(where), exc
    error.member = index  # type: ignore[attr-defined]
    error.__cause__ = cause
    return error


class _Member:
    """One plugin of a group: its session, and what the group keeps about it."""

    __slots__ = ("index", "name", "prefix", "session", "process", "saves", "exceptions", "ns")

    def __init__(self, index: int, name: str, session: Session, failure: str) -> None:
        self.index = index
        self.name = name
        self.prefix = f"[{name}] "
        self.session = session
        self.process = session.process
        # GroupMember.onFailure: auto is mute for an earlier-API processor, else bypass (the
        # host's effective_on_failure). Only a bypassing member's input is kept.
        self.saves = failure == "bypass" or (failure == "auto" and session.api != "legacy")
        self.exceptions = 0
        self.ns = 0  # time in its process(), perf_counter_ns


class GroupSession(Session):
    """A sandbox group `name`: each of `members` is ``(name, path, params, on_failure)``, loaded
    in order as ``load`` would (``on_failure``: auto | bypass | mute) into a Session of its own
    (SdkSession or LegacySession); `state` is a previous group's get_state() or empty.

    Each block, the members are called in order on it. One that raises, or returns False,
    leaves its on-failure in the block (its input kept in one scratch array, or zeros) and the
    next member goes on."""

    api = "group"

    def __init__(
        self,
        name: str,
        members: Sequence[Tuple[str, str, Sequence[Tuple[str, Any]], str]],
        rate: float,
        channels: int,
        max_frames: int,
        state: bytes,
    ) -> None:
        self.name = name
        self.members: List[_Member] = []
        if not members:
            raise LoadError(f"sandbox group {name!r} has no members")
        states = unpack_group_state(bytes(state), len(members))
        try:
            for index, (member, path, params, failure) in enumerate(members):
                if failure not in _MEMBER_FAILURES:
                    raise _member_error(index, f"member {member!r}: unknown on-failure {failure!r}")
                where = f"member {member!r} ({path})"
                session = self._call(index, member, where, load, path, rate, channels, max_frames, params,
                                     states[index], path=path)
                self.members.append(_Member(index, member, session, failure))
                if session.role != "processor":
                    raise _member_error(
                        index, f"a sandbox group holds processors only: member {member!r} is a {session.role}"
                    )
        except BaseException:
            self._shutdown_quietly()
            raise
        self.latency = sum(m.session.latency for m in self.members)
        # Contiguous (channels, frames) arrays per block size, over two flat buffers: the block
        # the members work on, and a bypass member's input. The shared segment's views are
        # strided (a channel every max_frames) for any block shorter than that, which doubles a
        # numpy operation's cost; one copy in and one out make every member's work contiguous.
        self._channels = channels
        self._flat_work = np.zeros(channels * max_frames, dtype=np.float32)
        self._flat_saved = np.zeros(channels * max_frames, dtype=np.float32)
        self._arrays: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}  # frames -> (work, saved)

    @staticmethod
    def _call(index: int, name: str, where: str, fn: Callable[..., Any], *args: Any, path: str = "") -> Any:
        """``fn(*args)`` as the member's code (its log lines prefixed with its name); what it
        raises becomes a LoadError starting with `where`."""
        global _member_prefix
        _member_prefix = f"[{name}] "
        try:
            return fn(*args)
        except BaseException as exc:  # noqa: B036 - a plugin may raise anything, even SystemExit
            error = _member_error(index, where, exc, path)
            raise error  # noqa: B904 - its __cause__ is set: exc, or what exc says it was caused by
        finally:
            _member_prefix = ""

    def process(self, block: np.ndarray) -> Optional[List[Tuple[int, str, str]]]:
        global _member_prefix
        failed: Optional[List[Tuple[int, str, str]]] = None
        frames = block.shape[1]
        arrays = self._arrays.get(frames)
        if arrays is None:
            size = self._channels * frames
            arrays = self._arrays[frames] = (
                self._flat_work[:size].reshape(self._channels, frames),
                self._flat_saved[:size].reshape(self._channels, frames),
            )
        shared = block
        block, saved = arrays
        block[...] = shared
        clock = time.perf_counter_ns
        t0 = clock()
        for m in self.members:
            _member_prefix = m.prefix
            if m.saves:
                saved[...] = block  # NOTE: half the cost of np.copyto (no argument parsing)
            try:
                result = m.process(block)
                if result is False:
                    if m.saves:
                        block[...] = saved
                    else:
                        block.fill(0.0)
                elif result is not None and result is not True:
                    Session.accept(block, result)
            except BaseException as exc:  # noqa: B036 - as a single plugin's: anything is its failure
                if m.saves:
                    block[...] = saved
                else:
                    block.fill(0.0)
                m.exceptions += 1
                if failed is None:
                    failed = []
                failed.append((m.index, *format_error(exc)))
            t1 = clock()
            m.ns += t1 - t0
            t0 = t1
        _member_prefix = ""
        shared[...] = block
        return failed

    def info(self) -> Dict[str, Any]:
        members = []
        for m in self.members:
            members.append(self._call(m.index, m.name, f"member {m.name!r}: info()", m.session.info))
        return {
            "api": "group",
            "name": self.name,
            "version": "",
            "description": "",
            "role": "processor",
            "latency": self.latency,
            "params": [],
            "members": members,
        }

    def _member(self, index: int) -> _Member:
        if not 0 <= index < len(self.members):
            raise LoadError(f"no member {index} in sandbox group {self.name!r} ({len(self.members)} members)")
        return self.members[index]

    def set_param(self, key: str, value: Any, member: int = 0) -> Any:
        """The member's set_param: its latency, or (an earlier-API member) (latency, read-back)."""
        m = self._member(member)
        result = self._call(member, m.name, f"member {m.name!r}: {key}", m.session.set_param, key, value)
        self.latency = sum(x.session.latency for x in self.members)
        return result

    def set_rate(self, rate: float) -> int:
        for m in self.members:
            self._call(m.index, m.name, f"member {m.name!r}", m.session.set_rate, rate)
        self.latency = sum(m.session.latency for m in self.members)
        return self.latency

    def get_state(self) -> bytes:
        return pack_group_state(
            [self._call(m.index, m.name, f"member {m.name!r}: get_state()", m.session.get_state) for m in self.members]
        )

    def stats(self) -> Tuple[List[int], List[int]]:
        """(exceptions, nanoseconds in process()) of each member."""
        return [m.exceptions for m in self.members], [m.ns for m in self.members]

    def shutdown(self) -> None:
        """Each member's shutdown, the next one's even if one raised; the first error is raised."""
        first: Optional[BaseException] = None
        for m in self.members:
            try:
                self._call(m.index, m.name, f"member {m.name!r}: shutdown", m.session.shutdown)
            except BaseException as exc:  # noqa: B036 - the other members still shut down
                if first is None:
                    first = exc
        self.members = []
        if first is not None:
            raise first

    def _shutdown_quietly(self) -> None:
        try:
            self.shutdown()
        except BaseException:  # noqa: B036 - the load error is what is reported
            pass


# The entry the C++ calls for a load with members: GroupSession(name, members, rate, channels,
# max_frames, state).
load_group = GroupSession


__all__ = [
    "install_stdio",
    "flush_stdio",
    "format_error",
    "load",
    "load_group",
    "LoadError",
    "Session",
    "GroupSession",
    "sandpipe",
]
