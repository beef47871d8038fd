"""A URL as it may be shown: the password of its ``scheme://user:password@`` masked.

The client's errors (``_requests.py``) and the settings ``ragstore config show`` prints
(``config.py``) both show RAGSTORE_URL, whose password httpx sends as basic auth. The
masking lived in the client's module, which the settings cannot import (the client is
above them), so ``config show`` printed the URL whole. This module imports only the
standard library, so both sides (and the thin client) read it without loading anything.

An HTTP model's endpoint (``embedding/http.py``, ``modelops/specs.py``) and the log lines
(``observability/logging.py``) mask theirs here too: each had its own pattern, and each
stopped at a password's first ``@`` (``http://u:p@ss@host`` showed ``ss``), which httpx
does not (the host starts after the last ``@``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

MASK = "***"
_SCHEME = r"[a-z][a-z0-9+.-]*:"
# ``scheme://user:`` then the password: up to the last ``@`` before a blank, ``?`` or
# ``#`` (a password's unescaped ``@`` or ``/`` is hidden with it)
_PASSWORD = r"(?P<head>[^:/?#@\s]*:)[^\s?#]+(?P<tail>@)"
_IN_TEXT = re.compile(rf"(?P<scheme>\b{_SCHEME}//){_PASSWORD}", re.IGNORECASE)
# one URL; one written without ``scheme://`` (``user:password@host:8080/v1``) too
_ONE = re.compile(rf"^(?P<scheme>{_SCHEME}//|//|(?!{_SCHEME}//)){_PASSWORD}", re.IGNORECASE)
# one URL's ``user:password@`` or ``user@``: what is dropped to name it without them
_USERINFO = re.compile(
    rf"^(?P<scheme>{_SCHEME}//|//|(?!{_SCHEME}//))(?:[^:/?#@\s]*:[^\s?#]*|[^/?#\s]*)@",
    re.IGNORECASE,
)


def shown_url(url: object) -> str:
    """``url`` (a ``str`` or an ``httpx.URL``) with the password of its
    ``user:password@`` replaced by ``***``; the user name, host, port, path and query are
    kept, and a URL without a password is returned as it was written. The host starts
    after the last ``@`` of the authority, as httpx and urllib read it, so a password's
    unescaped ``@`` is hidden too."""
    return _ONE.sub(_masking(MASK), str(url), count=1)


def masked_urls(text: str, mask: str = MASK) -> str:
    """``text`` (a message, a log line) with the password of every ``scheme://`` URL in
    it replaced by ``mask``."""
    return _IN_TEXT.sub(_masking(mask), text)


def without_userinfo(url: str) -> str:
    """``url`` without its ``user:password@`` (or ``user@``, a token written as the
    user name): how a URL whose credentials are refused is named, with nothing of them."""
    return _USERINFO.sub(r"\g<scheme>", url, count=1)


def _masking(mask: str) -> Callable[[re.Match[str]], str]:
    return lambda m: f"{m.group('scheme')}{m.group('head')}{mask}{m.group('tail')}"
