"""Every JSON file depthprior reads or writes: one reader with a size cap, a nesting limit and a
shape check (anything else is one FileFormatError naming the file), one atomic writer."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

from ..errors import FileFormatError, ImageError, first_line
from .place import Location
from .place import is_local, is_present, read_bytes

#: no depthprior JSON file comes near this: a manifest of a million images is ~500 MB
MAX_JSON_BYTES = 1 << 30
#: our files nest at most ~5 levels; a deeply nested file is a hostile or broken one
MAX_JSON_DEPTH = 32

Check = Callable[[Any], None]


def read_json(path: Location, *, missing_ok: bool = False, check: Check | None = None,
              hint: str = "", max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH, allow_nan: bool = True) -> Any:
    """The parsed contents of a JSON file, or None when it is absent and `missing_ok`.

    `check(data)` raises ValueError or TypeError with what is wrong (the schema of this kind of
    file); every problem becomes FileFormatError(path, problem, hint). allow_nan=False: a file
    encode_json wrote (it never holds NaN or Infinity, which strict JSON lacks) refuses them.
    """
    if missing_ok and not is_present(path):
        if is_local(path) and os.path.isdir(path):  # not "absent": it could never be written either
            raise FileFormatError(path, "is a folder, not a file", hint)
        return None
    try:
        data = read_bytes(path, max_bytes)
    except ImageError as error:
        raise FileFormatError(path, f"cannot be read ({first_line(error)})", hint) from None
    return parse_json(data, path, check=check, hint=hint, max_depth=max_depth, allow_nan=allow_nan)


def parse_json(text: bytes | str, source: object, *, check: Check | None = None, hint: str = "",
               max_depth: int = MAX_JSON_DEPTH, allow_nan: bool = True) -> Any:
    """read_json for text held in memory (e.g. ONNX metadata); `source` names it in errors."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        data = json.loads(text) if allow_nan else json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise FileFormatError(source, f"is nested more than {max_depth} levels deep; "
                                      "not a file depthprior wrote", hint) from None
    except (UnicodeDecodeError, ValueError) as error:
        raise FileFormatError(source, f"is not valid JSON ({first_line(error)})", hint) from None
    except MemoryError:  # under the size cap, yet millions of tiny values: never a file we wrote
        raise FileFormatError(source, "is too large to parse in this memory; not a file depthprior "
                                      "wrote", hint) from None
    if _depth_exceeds(data, max_depth):
        raise FileFormatError(source, f"is nested more than {max_depth} levels deep; "
                                      "not a file depthprior wrote", hint)
    if check is not None:
        try:
            check(data)
        except (TypeError, ValueError, KeyError) as error:
            raise FileFormatError(source, f"is malformed: {first_line(error)}", hint) from None
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; depthprior never writes it")


def _depth_exceeds(data: Any, limit: int) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in value if isinstance(child, (dict, list)))
    return False


def encode_json(data: Any, indent: int | None = 1) -> bytes:
    """Strict JSON (no NaN or Infinity) as UTF-8 bytes with a final newline."""
    return (json.dumps(data, indent=indent, allow_nan=False) + "\n").encode("utf-8")


def write_json(path: Location, data: Any, indent: int | None = 1) -> None:
    """path holds the JSON text completely or not at all; WriteError names it on failure."""
    from .outputs import atomic_write_bytes

    atomic_write_bytes(path, encode_json(data, indent))


# ---------------------------------------------------------------- shape checks

def expect_object(data: Any, what: str = "the file") -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"{what} is a JSON {_kind(data)}, not an object")
    return data


def expect_fields(data: Mapping[str, Any], fields: Mapping[str, type | tuple[type, ...]],
                  where: str = "") -> None:
    """Each named field, where present, has one of its types (bool is never a number)."""
    for key, types in fields.items():
        if key not in data:
            continue
        value = data[key]
        numeric = types in (int, float) or (isinstance(types, tuple) and float in types)
        if not isinstance(value, types) or (numeric and isinstance(value, bool)):
            place = f"{where}{'.' if where else ''}{key}"
            raise TypeError(f"{place!r} is a JSON {_kind(value)}")


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)
