"""Common Expression Language for the emulator: admission policies and CRD validation rules.

A real API server evaluates ``ValidatingAdmissionPolicy`` expressions and CRD
``x-kubernetes-validations`` rules with cel-go. The emulator uses ``cel-expr-python``
(the Python binding of the CEL project's C++ runtime, PyPI ``cel-expr-python``) with the
``strings`` and ``optional`` extensions that Kubernetes enables too, and declares every
variable ``dyn``: objects arrive as the plain JSON maps the API server also evaluates
against, so a missing field is a "no such key" error and ``has()`` is needed as on a cluster.

Why this package: measured on a 2-core machine of the kind CI runs on, over a VAP-style set of
expressions (a node-name lookup in ``request.userInfo.extra``, ``has()`` chains, ``oldObject ==
null``, ``all()`` over six status fields, label-map ``in`` checks, ``startsWith``/``split``,
``.?`` optionals), evaluation including the conversion of the JSON objects:

=================  ==========  ==============  ============  =====================================
package            import      compile / expr  eval / expr   coverage
=================  ==========  ==============  ============  =====================================
cel-expr-python    8 ms        0.4-2 ms        11-43 us      everything above (C++ runtime, wheels
0.1.3                                                        for Linux x86-64/arm64, macOS, Windows)
cel-python 0.5.0   300 ms      0.5-7 ms        0.4-6.4 ms    no ``.?`` optional syntax, no strings
                                                             extension (``split``); pure Python
=================  ==========  ==============  ============  =====================================

cel-expr-python is 30 to 300 times faster per evaluation and accepts the syntax Kubernetes
policies use, so it is the one pinned in the ``emulator`` extra. Kubernetes' own CEL libraries
(``quantity()``, ``url()``, ``isSorted()``, ``authorizer``…) are not provided: an expression that
calls one fails to compile, loudly, instead of being evaluated wrongly.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

try:
    from cel_expr_python import cel as _cel
    from cel_expr_python.ext import ext_optional, ext_strings
except ImportError:  # pragma: no cover - the emulator extra installs it
    _cel = None

#: Variables of a ValidatingAdmissionPolicy expression (``authorizer`` is not emulated).
POLICY_VARIABLES = ("object", "oldObject", "request", "params", "namespaceObject", "variables")
#: Variables of a CRD validation rule.
RULE_VARIABLES = ("self", "oldSelf")

_OLD_SELF = re.compile(r"\boldSelf\b")


class CelError(Exception):
    """An expression did not compile, or its evaluation ended in an error (e.g. "no such key")."""


def available() -> bool:
    return _cel is not None


def is_transition_rule(rule: str) -> bool:
    """Whether a CRD rule compares with the old value (evaluated on updates only)."""
    return bool(_OLD_SELF.search(rule))


class Environment:
    """Compiles expressions over a fixed set of ``dyn`` variables, caching each program."""

    def __init__(self, variables: Iterable[str]) -> None:
        self._variables = tuple(variables)
        self._env: Any = None
        self._programs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _environment(self) -> Any:
        if _cel is None:
            raise CelError("CEL is not available: install gpufleet[emulator] (cel-expr-python)")
        if self._env is None:
            self._env = _cel.NewEnv(
                variables={name: _cel.Type.DYN for name in self._variables},
                extensions=[ext_strings.ExtStrings(), ext_optional.ExtOptional()],
            )
        return self._env

    def compile(self, expression: str) -> Any:
        """The compiled program; CelError with the compiler's message when it does not compile."""
        with self._lock:
            program = self._programs.get(expression)
            if program is None:
                try:
                    program = self._environment().compile(expression)
                except RuntimeError as error:
                    raise CelError(_compile_message(str(error))) from None
                self._programs[expression] = program
        return program

    def evaluate(self, expression: str, data: Mapping[str, Any]) -> Any:
        """The expression's value as plain Python data; CelError for a runtime error."""
        program = self.compile(expression)
        try:
            value = program.eval(data={name: data.get(name) for name in self._variables})
        except RuntimeError as error:
            raise CelError(str(error)) from None
        if value.type() == _cel.Type.ERROR:
            raise CelError(_runtime_message(str(value.value())))
        return value.plain_value()


def _compile_message(text: str) -> str:
    """``INVALID_ARGUMENT: ERROR: <input>:1:8: Syntax error: …`` without the status-code prefix."""
    return text.removeprefix("INVALID_ARGUMENT: ").strip()


def _runtime_message(text: str) -> str:
    """cel-go words a missing map key ``no such key: x``; the C++ runtime ``Key not found in map : "x"``."""
    match = re.search(r'Key not found in map : "?([^"]*)"?', text)
    if match:
        return f"no such key: {match.group(1)}"
    return re.sub(r"^[A-Z_]+: ", "", text)
