"""Jinja additions: the `pystr` filter and the `template_root` and `choices` globals.

`template_root` is the template's directory as this module was imported from it, made
absolute. cookiecutter runs each hook as a rendered copy in a temporary directory, with
the new project as its working directory, and says where the template is only as typed
(`_template`: a relative path, `.`, or a URL) or not at all under cruft; but it imports
this module, by `_extensions`, from the template itself however it was invoked (a path,
a clone in ~/.cookiecutters, cruft's temporary clone). The hooks import their helpers
from there.

`choices`: the lists of cookiecutter.json (backends, strategies, ...), the one place they
are written; the generated config's types and the hooks' checks are made from them.

`pystr`: a free-text answer as a Python string literal ruff accepts.

`tojson` gives a valid literal, but ruff format rewrites `"a \\"b\\""` to `'a "b"'`, so a
project generated with a quote in an answer would fail `ruff format --check`. This
writes the literal exactly as ruff would: double quotes unless the text holds more
double than single quotes, and non-ASCII as escapes (no ambiguous-character lint).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jinja2 import Environment
from jinja2.ext import Extension

from .answers import choices

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def python_string(value: str) -> str:
    quote = "'" if value.count('"') > value.count("'") else '"'
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char == quote:
            out.append("\\" + char)
        elif char.isascii() and char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return quote + "".join(out) + quote


class PythonStringExtension(Extension):
    """Registered in cookiecutter.json's `_extensions`."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        filters: dict[str, Any] = environment.filters
        filters["pystr"] = python_string
        environment.globals["template_root"] = TEMPLATE_ROOT
        environment.globals["choices"] = CHOICES
        _forget_template_modules()


def _forget_template_modules() -> None:
    """Let the next environment import this package afresh from the template on sys.path.

    cruft update renders the project's old commit and then the new one in one process,
    from one clone; a cached module would give the new rendering the old commit's filters
    (a filter added since: "No filter named ..."). In-process callers that render several
    template copies (pytest-cookies) would likewise get the first copy's `template_root`.
    Importing again costs about a millisecond per environment.
    """
    package = __name__.partition(".")[0]
    for name in [name for name in sys.modules if name.partition(".")[0] == package]:
        del sys.modules[name]


TEMPLATE_ROOT = str(Path(__file__).resolve().parents[1])
CHOICES = choices(Path(TEMPLATE_ROOT))
