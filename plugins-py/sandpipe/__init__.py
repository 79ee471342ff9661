"""Sandpipe's Python plugin SDK.

A Python plugin is one ``.py`` file defining one subclass of :class:`Plugin`. Sandpipe runs
every Python plugin in its own sandbox process: the plugin sees one block of audio at a time as
a float32 numpy array of shape ``(channels, frames)`` and changes it in place.

Minimal plugin::

    import sandpipe

    class Gain(sandpipe.Plugin):
        \"\"\"Multiplies every sample by a factor.\"\"\"
        params = {"gain": sandpipe.Param(1.0, 0.0, 4.0, label="Gain")}

        def process(self, block):
            block *= self.gain

Lifecycle, all on the sandbox's single processing thread:

1. ``Plugin()`` – no arguments. Parameter attributes already hold their defaults.
2. ``prepare(rate, channels, max_frames)`` – allocate here, never in ``process``.
3. ``set_param(key, value)`` once per declared parameter, with the value from the chain's
   config or the default, in declaration order; later again for every live change.
4. ``set_state(data)`` if the host restores a previous instance's ``get_state()``.
5. ``process(block)`` per block, ``1 <= frames <= max_frames``.

See docs/plugin-guide-python.md for the full guide.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar, Dict, Optional, Sequence

__all__ = [
    "Param",
    "Choice",
    "Toggle",
    "Text",
    "Plugin",
    "ParamError",
    "KINDS",
]

__version__ = "0.1.0"

#: Parameter kinds, as the host's ``inspect`` shows them.
KINDS = ("number", "integer", "boolean", "choice", "text")


class ParamError(ValueError):
    """A parameter key or value the plugin does not accept."""


class Param:
    """A declared parameter.

    The kind follows from the arguments:

    * ``Param(1.0, 0.0, 4.0)`` – a number in ``[min, max]`` (a float attribute);
    * ``Param(3, 1, 8)`` – an integer (an int attribute; an ``int`` default makes it one);
    * ``Param(True)`` – a boolean;
    * ``Param("peak", choices=["lowpass", "highpass", "peak"])`` – one of a few strings;
    * ``Param("secret")`` – free text.

    ``unit`` and ``label`` are shown by ``sandpipe inspect``; ``label`` defaults to the key.
    """

    __slots__ = ("default", "min", "max", "unit", "label", "choices", "kind", "doc")

    def __init__(
        self,
        default: Any,
        min: Optional[float] = None,  # noqa: A002 - reads best at the call site
        max: Optional[float] = None,  # noqa: A002
        *,
        unit: str = "",
        label: str = "",
        choices: Optional[Sequence[str]] = None,
        kind: Optional[str] = None,
        doc: str = "",
    ) -> None:
        if kind is None:
            if choices is not None:
                kind = "choice"
            elif isinstance(default, bool):
                kind = "boolean"
            elif isinstance(default, numbers.Integral):
                kind = "integer"
            elif isinstance(default, numbers.Real):
                kind = "number"
            elif isinstance(default, str):
                kind = "text"
            else:
                raise ParamError(f"cannot tell the kind of a parameter with default {default!r}")
        if kind not in KINDS:
            raise ParamError(f"unknown parameter kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.unit = str(unit)
        self.label = str(label)
        self.doc = str(doc)
        self.choices = tuple(str(c) for c in choices) if choices is not None else ()
        if kind in ("number", "integer"):
            lo = -math.inf if min is None else float(min)
            hi = math.inf if max is None else float(max)
            if not lo <= hi:
                raise ParamError(f"min {min!r} is above max {max!r}")
            self.min, self.max = lo, hi
        else:
            if min is not None or max is not None:
                raise ParamError(f"a {kind} parameter has no range")
            self.min, self.max = 0.0, 0.0
        if kind == "choice" and not self.choices:
            raise ParamError("a choice parameter needs at least one choice")
        # Validates the default against the declaration itself.
        self.default = self.coerce(default, "default")

    def coerce(self, value: Any, key: str = "value") -> Any:
        """Returns ``value`` converted to this parameter's Python type, or raises ParamError."""
        kind = self.kind
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
                return value.lower() in ("true", "on", "1")
            raise ParamError(f"{key}: expected a boolean, got {value!r}")
        if kind in ("number", "integer"):
            if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
                raise ParamError(f"{key}: expected a number, got {value!r}")
            try:
                number = float(value)
            except ValueError:
                raise ParamError(f"{key}: expected a number, got {value!r}") from None
            if math.isnan(number):
                raise ParamError(f"{key}: NaN is not a value")
            if kind == "integer":
                if not number.is_integer():
                    raise ParamError(f"{key}: expected an integer, got {value!r}")
            if not self.min <= number <= self.max:
                raise ParamError(f"{key}: {value!r} is outside {_fmt(self.min)} .. {_fmt(self.max)}")
            return int(number) if kind == "integer" else number
        if kind == "choice":
            text = str(value) if isinstance(value, str) else None
            if text not in self.choices:
                raise ParamError(f"{key}: {value!r} is not one of {', '.join(self.choices)}")
            return text
        if not isinstance(value, str):
            raise ParamError(f"{key}: expected text, got {value!r}")
        return value

    def __repr__(self) -> str:
        extra = ""
        if self.kind in ("number", "integer"):
            extra = f", {_fmt(self.min)}, {_fmt(self.max)}"
        elif self.kind == "choice":
            extra = f", choices={list(self.choices)!r}"
        return f"Param({self.default!r}{extra}, kind={self.kind!r})"


def Choice(default: str, choices: Sequence[str], **kwargs: Any) -> Param:  # noqa: N802 - a constructor
    """A parameter taking one of ``choices`` (strings)."""
    return Param(default, choices=choices, **kwargs)


def Toggle(default: bool = False, **kwargs: Any) -> Param:  # noqa: N802
    """A boolean parameter."""
    return Param(bool(default), kind="boolean", **kwargs)


def Text(default: str = "", **kwargs: Any) -> Param:  # noqa: N802
    """A free-text parameter (a key, a file name...)."""
    return Param(str(default), kind="text", **kwargs)


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:g}"


class Plugin:
    """Base class of every SDK plugin. Subclass it once per file.

    Class attributes to override:

    ``name``
        Shown by ``sandpipe inspect`` and in logs; defaults to the class name.
    ``version``, ``description``
        Free text; ``description`` defaults to the first line of the class docstring.
    ``params``
        ``{"key": Param(...)}``. Every key becomes an attribute holding the current value
        (``self.gain``), set by :meth:`set_param`.
    ``latency``
        Frames of delay the plugin adds (lookahead). The host delays its dry signal by as much
        so a bypassed block lines up with processed ones. May be an instance attribute that
        ``set_param`` updates; the value after loading is what the host uses.
    ``role``
        ``"processor"`` (default: :meth:`process`), ``"source"`` (:meth:`generate`; only first
        in a chain) or ``"sink"`` (:meth:`consume`; only last in a chain).

    Methods to override: :meth:`process` (required for processors), :meth:`prepare`,
    :meth:`set_param`, :meth:`get_state` / :meth:`set_state`.
    """

    name: ClassVar[Optional[str]] = None
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""
    params: ClassVar[Dict[str, Param]] = {}
    role: ClassVar[str] = "processor"
    latency: int = 0

    #: Set by ``prepare``.
    rate: float = 0.0
    channels: int = 0
    max_frames: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for key, param in cls.params.items():
            if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
                raise ParamError(f"{cls.__name__}: parameter key {key!r} must be a public identifier")
            if not isinstance(param, Param):
                raise ParamError(f"{cls.__name__}: params[{key!r}] must be a sandpipe.Param")
            if hasattr(Plugin, key):
                raise ParamError(f"{cls.__name__}: parameter key {key!r} clashes with Plugin.{key}")
            # Class-level default, so `self.key` works even before set_param and even if a
            # subclass __init__ forgets to call super().__init__().
            if key not in vars(cls):
                setattr(cls, key, param.default)

    def prepare(self, rate: float, channels: int, max_frames: int) -> None:
        """Called before any parameter is applied and before the first block; called again,
        between two blocks, when the graph's rate changes (then every parameter is set again
        with its current value, and the state get_state() returned just before is restored).

        Allocate buffers and filter state here: ``process`` should not allocate.
        The default stores ``self.rate``, ``self.channels`` and ``self.max_frames``.
        """
        self.rate = rate
        self.channels = channels
        self.max_frames = max_frames

    def process(self, block: Any) -> Any:
        """Processes one block: ``block`` is a float32 array ``(channels, frames)``.

        Change it in place (``block *= 2``, ``block[:] = ...``, ``np.multiply(block, g, out=block)``)
        and return None, or return an array of the same shape to be copied into it.
        ``block`` is a view on shared memory that is only valid during this call: do not keep it.
        Raising an exception makes the host use the dry input for this block.
        """
        raise NotImplementedError(f"{type(self).__name__}.process() is not implemented")

    def generate(self, block: Any) -> Any:
        """A source (``role = "source"``) fills ``block`` (float32 ``(channels, frames)``, zeroed
        before the call) in place and returns None, or returns an array of its shape to copy in.
        Returning False means nothing was produced: the block is silence.
        """
        raise NotImplementedError(f"{type(self).__name__}.generate() is not implemented")

    def consume(self, block: Any) -> None:
        """A sink (``role = "sink"``) reads ``block`` (float32 ``(channels, frames)``; do not keep
        it, copy what you need). The block passes on unchanged whatever this does to it.
        """
        raise NotImplementedError(f"{type(self).__name__}.consume() is not implemented")

    def set_param(self, key: str, value: Any) -> None:
        """Applies a parameter value, already checked against its declaration.

        The default sets ``self.<key> = value``. Override it to recompute coefficients (call
        ``super().set_param(key, value)`` first); raise ``ParamError`` to refuse a value.
        """
        setattr(self, key, value)

    def get_state(self) -> bytes:
        """Returns whatever is needed to resume after a restart of the sandbox (default: nothing).

        Parameters are restored by the host separately; this is for internal state (a
        keystream position, a learned noise profile...).
        """
        return b""

    def set_state(self, data: bytes) -> None:
        """Restores what ``get_state`` returned, after ``prepare`` and the parameters."""
        del data
