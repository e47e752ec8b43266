"""The limits on what a caller may send, checked before anything is parsed or asked of the API.

Each limit turns hostile or absurd input into a 4xx from the documented table instead of a crash,
a stack overflow or an object Kubernetes refuses later. Valid input of the legacy API is far
inside all of them: its bodies nest two levels deep, its numbers fit in 64 bits, its host ids are
15 characters.

- Request line and each header line: about 8 KiB (aiohttp's parser: 8190 bytes, checked per
  buffer), at most 100 headers; beyond, 40004.
- Query string: 2048 bytes (40003); `page` at most 2147483647, so at most 10 digits.
- Body: 1 MiB (`GPUFLEET_MAX_BODY_BYTES`, 41301); JSON nested at most 32 levels and numbers of at
  most 64 characters (40002), both checked on the raw bytes before the JSON parser runs, so that
  a body nested 100,000 levels deep never reaches a recursive parser.
- `{host_id}` in a path: a Kubernetes object name (DNS subdomain, at most 253 characters), else 404
  without asking the API. Host ids the facade makes are 15 characters, so they fit in the label
  values (`gpufleet.io/host`) and object names derived from them.
"""

from __future__ import annotations

import itertools
import re

#: aiohttp's limits on the request line, on each header line, and on the number of headers.
MAX_LINE_BYTES = 8190
MAX_HEADERS = 100
MAX_QUERY_BYTES = 2048
#: Largest page number: what a 32-bit signed integer holds (the legacy server's type).
MAX_PAGE = 2**31 - 1
MAX_DEPTH = 32
MAX_NUMBER_CHARS = 64

#: A Kubernetes object name (RFC 1123 subdomain), which every Host name is.
HOST_ID_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HOST_ID = re.compile(HOST_ID_PATTERN)

# A JSON string (escapes included) in raw bytes; what lies between strings is structure and numbers.
# The closing quote is optional, so that an unterminated string runs to the end instead of making
# the search start again at every later quote (which would be quadratic).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_LONG_NUMBER = re.compile(rb"-?[0-9][-+0-9.eE]{%d,}" % MAX_NUMBER_CHARS)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [0] * 256
for _open in b"[{":
    _DEPTH_STEP[_open] = 1
for _close in b"]}":
    _DEPTH_STEP[_close] = -1


def body_problem(raw: bytes) -> str | None:
    """What makes a JSON body unacceptable before parsing (too deep, too long a number), or None.

    Works on the bytes with regular expressions and C-level iteration only: strings are cut out
    (so brackets and digits inside them do not count), then the nesting depth is the running
    sum of opening (+1) and closing (-1) brackets. Malformed JSON that is not too deep is left
    to the parser to report.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH and _LONG_NUMBER.search(raw) is None:
        return None  # the usual body: too few brackets to nest too deep, no long run of digits anywhere
    skeleton = _STRING.sub(b'""', raw)
    if _LONG_NUMBER.search(skeleton):
        return f"numbers may have at most {MAX_NUMBER_CHARS} characters"
    brackets = skeleton.translate(None, _NOT_BRACKETS)
    if len(brackets) > MAX_DEPTH and max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > MAX_DEPTH:
        return f"JSON may nest at most {MAX_DEPTH} levels deep"
    return None


def valid_host_id(value: str) -> bool:
    """Whether `value` can be the name of a Host at all."""
    return len(value) <= 253 and _HOST_ID.match(value) is not None
