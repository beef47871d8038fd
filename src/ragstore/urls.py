"""A URL as it may be shown: the password of its ``scheme://user:password@`` masked.

The client's errors (``_requests.py``) and the settings ``ragstore config show`` prints
(``config.py``) both show RAGSTORE_URL, whose password httpx sends as basic auth. The
masking lived in the client's module, which the settings cannot import (the client is
above them), so ``config show`` printed the URL whole. This module imports only the
standard library, so both sides (and the thin client) read it without loading anything.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MASK = "***"
# the fallback for text ``urlsplit`` refuses (a broken ``[`` of an IPv6 host): a
# ``//user:password@``'s password up to the last ``@`` before the path
_PASSWORD = re.compile(r"(//[^/@:\s]*):[^/\s]*@")


def shown_url(url: object) -> str:
    """``url`` (a ``str`` or an ``httpx.URL``) with the password of its
    ``user:password@`` replaced by ``***``; the user name, host, port, path and query are
    kept, and a URL without a password is returned as it was written. The host starts
    after the last ``@`` of the authority, as httpx and urllib read it, so a password's
    unescaped ``@`` is hidden too."""
    text = str(url)
    try:
        netloc = urlsplit(text).netloc
    except ValueError:
        return _PASSWORD.sub(rf"\1:{MASK}@", text)
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    user = userinfo.partition(":")[0]
    return text.replace(netloc, f"{user}:{MASK}@{host}", 1)
