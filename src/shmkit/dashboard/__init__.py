"""The status page for what lives in shared memory (``shmkit serve``, ``shmkit cgi``).

- ``collect.py``: the status document (``collect_status()``), from shmkit's public API;
- ``app.py``: requests to answers (routes, validation, actions with a token);
- ``server.py``: ``shmkit serve`` on the standard library's ThreadingHTTPServer;
- ``cgi.py``: ``shmkit cgi`` for any CGI web server;
- ``metrics.py``: ``/metrics`` with prometheus_client (``pip install shmkit[metrics]``);
- ``page.py`` and ``static/``: the page, one HTML document with inline script and style.

See docs/serve.md.
"""

from __future__ import annotations

from .collect import Collector, ZoneSpec, collect_status, parse_zone_spec, statistics_of

__all__ = ["Collector", "ZoneSpec", "collect_status", "parse_zone_spec", "statistics_of"]
