"""The web console at ``/ui``: server-rendered page shells plus one small script.

Pages are Jinja templates (autoescaped) that carry no data: the script reads the API key
from the tab's ``sessionStorage``, calls the JSON API with it as a bearer header and
renders every stored text with ``textContent``. So the console can do exactly what the
key can, there are no cookies to ride on (nothing to forge cross-site), and the key never
appears in a URL or a log line. :mod:`ragstore.console.security` adds the strict
Content-Security-Policy; :func:`install_console` is the one hook the app factory calls.
"""

from __future__ import annotations

from ragstore.console.routes import install_console

__all__ = ["install_console"]
