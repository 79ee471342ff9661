"""Glue between the sandbox executable (C++) and one plugin file. Private: not for plugins.

The sandbox calls, on its one processing thread:

* ``install_stdio(log)`` once: ``sys.stdout``/``sys.stderr`` become line writers that call
  ``log(stream, line)`` (1 = stdout, 2 = stderr); the sandbox sends each line to the host.
* ``preload(path)`` at most once, before ``load`` (a spare sandbox): imports the file ahead of time.
* ``load(path, rate, channels, max_frames, params, state)`` -> a ``Session``: imports the file
  (or takes the preloaded module if the file still has the contents it was imported from), tells
  the two plugin APIs apart, prepares the plugin and applies the params.
* per block ``session.process(block)``; its result is interpreted in C++: None or True ->
  processed, False -> pass the block through, anything else -> ``session.accept(block, result)``.
  A source's ``process`` fills the block and returns True; a sink's consumes it and returns
  False (the block passes on unchanged). ``session.info()["role"]`` says which.
* ``session.set_param``, ``session.get_state``, ``session.shutdown`` between blocks.
* ``format_error(exc)`` -> ``(message, traceback)`` for anything that raised.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import sys
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


class _LineWriter(io.TextIOBase):
    """A text stream that hands complete lines to the sandbox's log function."""

    _max_pending = 8192

    def __init__(self, stream: int, log: Callable[[int, str], None]) -> None:
        super().__init__()
        self._stream = stream
        self._log = log
        self._pending = ""

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
        text = self._pending + s
        lines = text.split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._log(self._stream, line)
        if len(self._pending) > self._max_pending:
            self._log(self._stream, self._pending)
            self._pending = ""
        return len(s)

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, ""
            self._log(self._stream, pending)


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
        return str(exc), ""
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
    # The plugin's own folder, right after the SDK, so a plugin split over files imports its
    # siblings (the plugin guide promises it).
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(1, folder)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else "sandpipe_plugin"
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
) -> "Session":
    module = _take_preloaded(path)
    preloaded = module is not None
    if module is None:
        module, _ = _import_file(path)
    session = _instantiate(module, path, rate, channels, max_frames, params, state)
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
) -> "Session":
    factory = getattr(module, "create_plugin", None)
    if callable(factory):
        obj = factory()
        if isinstance(obj, Plugin):
            return SdkSession(obj, rate, channels, max_frames, params, state)
        return LegacySession(obj, path, rate, channels, max_frames, params)
    cls = _sdk_class(module, path)
    if cls is None:
        raise LoadError(
            f"{path}: no plugin found: define one subclass of sandpipe.Plugin "
            "(or, for the earlier API, a create_plugin() function)"
        )
    return SdkSession(cls(), rate, channels, max_frames, params, state)


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
    """``process`` for a sink: the block is read, and passes on unchanged (False)."""

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
    ) -> None:
        self.plugin = plugin
        cls = type(plugin)
        self.declared: Dict[str, Param] = dict(cls.params)
        given: Dict[str, Any] = {}
        for key, value in params:
            if key not in self.declared:
                raise ParamError(self._unknown(key))
            given[key] = self.declared[key].coerce(value, key)
        plugin.prepare(rate, channels, max_frames)
        for key, param in self.declared.items():
            plugin.set_param(key, given.get(key, param.default))
        if state:
            plugin.set_state(bytes(state))
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
        self.plugin.set_param(key, param.coerce(value, key))
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
# the earlier API

_LEGACY_KINDS = {
    "float": "number",
    "double": "number",
    "number": "number",
    "int": "integer",
    "integer": "integer",
    "bool": "boolean",
    "boolean": "boolean",
    "choice": "choice",
    "enum": "choice",
    "str": "text",
    "string": "text",
    "text": "text",
}

_ROLES = {"source": "source", "sink": "sink", "generator": "source"}


def _legacy_text(value: Any) -> str:
    """Config values reach legacy plugins as strings, written the way a person would."""
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


class LegacySession(Session):
    api = "legacy"

    def __init__(
        self,
        obj: Any,
        path: str,
        rate: float,
        channels: int,
        max_frames: int,
        params: Sequence[Tuple[str, Any]],
    ) -> None:
        if not callable(getattr(obj, "get_info", None)):
            raise LoadError(f"{path}: create_plugin() returned a {type(obj).__name__} without get_info()")
        self.obj = obj
        self.rate = rate
        self.channels = channels
        self.position = 0
        self._buffers: Dict[int, Tuple[Any, np.ndarray]] = {}
        self._buffer_type = self._find_buffer_type()
        self._call("set_sample_rate", int(rate) if float(rate).is_integer() else rate)
        self._call("set_channel_count", channels)
        if self._call("initialize") is False:
            raise LoadError(f"{path}: initialize() returned False")
        self.plugin_info = obj.get_info()
        ptype = getattr(self.plugin_info, "plugin_type", None)
        self.role = _ROLES.get(str(getattr(ptype, "value", ptype) or "").lower(), "processor")
        method = {"source": "read_audio", "sink": "write_audio"}.get(self.role, "process_audio")
        base = getattr(sys.modules.get("base_plugin"), "AudioProcessorPlugin", None)
        inherited = base is not None and getattr(type(obj), method, None) is getattr(base, method, None)
        if inherited or not callable(getattr(obj, method, None)):
            raise LoadError(f"{path}: create_plugin() returned a {self.role} {type(obj).__name__} without {method}()")
        if self.role == "source":
            self.process = _source_process(self._legacy_call(obj.read_audio))
        elif self.role == "sink":
            self.process = _sink_process(self._legacy_call(obj.write_audio))
        for key, value in params:
            self.set_param(key, value)
        if self._call("start") is False:
            raise LoadError(f"{path}: start() returned False")
        self.latency = self._latency()

    def _call(self, method: str, *args: Any) -> Any:
        fn = getattr(self.obj, method, None)
        return fn(*args) if callable(fn) else None

    @staticmethod
    def _find_buffer_type() -> Any:
        module = sys.modules.get("base_plugin")
        return getattr(module, "AudioBuffer", None)

    def _latency(self) -> int:
        getter = getattr(self.obj, "get_latency", None)
        value = getter() if callable(getter) else getattr(self.plugin_info, "latency", 0)
        return _check_latency(value or 0)

    def _make_buffer(self, block: np.ndarray) -> Any:
        channels, frames = block.shape
        if self._buffer_type is not None:
            try:
                return self._buffer_type(
                    data=block, sample_rate=int(self.rate), channels=channels, frames=frames, timestamp=0.0
                )
            except TypeError:
                pass
        from base_plugin import AudioBuffer  # ours, always importable in the sandbox

        return AudioBuffer(data=block, sample_rate=int(self.rate), channels=channels, frames=frames)

    def _buffer_for(self, block: np.ndarray) -> Any:
        # One buffer object per cached view: nothing is built per block but the timestamp float.
        entry = self._buffers.get(id(block))
        if entry is None or entry[1] is not block:
            entry = (self._make_buffer(block), block)
            self._buffers[id(block)] = entry
        buffer = entry[0]
        buffer.data = block
        buffer.timestamp = self.position / self.rate
        self.position += block.shape[1]
        return buffer

    def _legacy_call(self, method: Callable[[Any], Any]) -> Callable[[np.ndarray], Any]:
        """``read_audio`` / ``write_audio`` on the block wrapped in an AudioBuffer; the result
        as the plugin returned it, None turned into True (no return statement: it worked)."""

        def call(block: np.ndarray) -> Any:
            buffer = self._buffer_for(block)
            result = method(buffer)
            if buffer.data is not block:
                self.accept(block, buffer.data)
            return True if result is None else bool(result)

        return call

    def process(self, block: np.ndarray) -> bool:
        buffer = self._buffer_for(block)
        result = self.obj.process_audio(buffer)
        if buffer.data is not block:
            # Some old plugins assigned a new array instead of writing in place.
            self.accept(block, buffer.data)
        # None (no return statement) counts as processed; only an explicit falsy value passes.
        return result is None or bool(result)

    def info(self) -> Dict[str, Any]:
        pi = self.plugin_info
        params = []
        for key, spec in dict(getattr(pi, "parameters", {}) or {}).items():
            params.append(self._param_info(str(key), spec))
        return {
            "api": "legacy",
            "name": str(getattr(pi, "name", "") or type(self.obj).__name__),
            "version": str(getattr(pi, "version", "") or ""),
            "description": str(getattr(pi, "description", "") or ""),
            "role": self.role,
            "latency": self.latency,
            "params": params,
        }

    @staticmethod
    def _param_info(key: str, spec: Any) -> Dict[str, Any]:
        if not isinstance(spec, dict):
            spec = {"default": spec}
        default = spec.get("default", "")
        kind = _LEGACY_KINDS.get(str(spec.get("type", "")).lower())
        if kind is None:
            if isinstance(default, bool):
                kind = "boolean"
            elif spec.get("choices"):
                kind = "choice"
            elif _as_number(default) is not None:
                kind = "number"
            else:
                kind = "text"
        info: Dict[str, Any] = {
            "key": key,
            "label": str(spec.get("label", spec.get("description", key)) or key),
            "unit": str(spec.get("unit", "") or ""),
            "kind": kind,
            "min": -math.inf,
            "max": math.inf,
            "default": str(default),
            "choices": [str(c) for c in spec.get("choices", []) or []],
        }
        if kind in ("number", "integer"):
            lo, hi, d = _as_number(spec.get("min")), _as_number(spec.get("max")), _as_number(default)
            info["min"] = lo if lo is not None else -math.inf
            info["max"] = hi if hi is not None else math.inf
            info["default"] = d if d is not None else 0.0
        elif kind == "boolean":
            info["default"] = str(default).lower() in ("true", "1", "on", "yes")
        return info

    def set_param(self, key: str, value: Any) -> int:
        text = _legacy_text(value)
        if self.obj.set_parameter(key, text) is False:
            raise ParamError(f"the plugin refused {key} = {text!r}")
        self.latency = self._latency()
        return self.latency

    def shutdown(self) -> None:
        self._call("stop")
        self._call("shutdown")


__all__ = ["install_stdio", "flush_stdio", "format_error", "load", "LoadError", "Session", "sandpipe"]
