"""`cloudlet login --oidc`: sign in through the server's OpenID Connect provider in a browser.

A one-shot HTTP listener on 127.0.0.1 receives the tokens the server hands to the loopback
address at the end of the login, after checking the random state this command made.
"""

from __future__ import annotations

import http.server
import secrets
import threading
import webbrowser
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

DONE_PAGE = b"<html><body><p>Signed in to cloudlet. You can close this tab.</p></body></html>"


def browser_login(
    url: str, *, timeout: float = 300.0, open_url: Callable[[str], object] = webbrowser.open
) -> dict[str, str]:
    """Run the login; returns the token pair (access_token, refresh_token). ``open_url`` shows
    the provider's page to the user (their browser; a test drives it with an HTTP client)."""
    state = secrets.token_urlsafe(32)
    received: dict[str, Any] = {}
    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path != "/callback" or not secrets.compare_digest(query.get("state", ""), state):
                self.send_error(400, "not the login this command started")
                return
            received.update(query)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(DONE_PAGE)
            done.set()

        def log_message(self, *_: Any) -> None:
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        start = f"{url.rstrip('/')}/api/v1/auth/oidc/login?" + urlencode(
            {"cli_port": port, "cli_state": state}
        )
        print(f"Open this address to sign in (opening it for you):\n  {start}")
        open_url(start)
        if not done.wait(timeout):
            raise TimeoutError("no sign-in arrived in time")
    finally:
        server.shutdown()
        server.server_close()
    if "access_token" not in received:
        raise RuntimeError("the server sent no tokens")
    return {"access_token": received["access_token"], "refresh_token": received["refresh_token"]}
