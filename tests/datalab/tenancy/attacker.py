"""The attacker's program: run by the tests as another user's service account (``python3 -I
attacker.py`` under ``datalab-<user>``, stdlib only), it tries each probe it is given and
prints, as JSON, which ones got through. It knows nothing of the platform: it does what any
program a user runs in their service can do on this machine.

Probes (a JSON list of dicts on stdin):
- ``{"kind": "read", "path": p}``: open and read a file, or list a directory;
- ``{"kind": "walk", "root": p}``: every file under ``root`` it can read and every directory it
  can list (the detail lists them);
- ``{"kind": "http", "url": u, "method": m, "headers": {...}, "body": s}``: an HTTP request;
  got through when the answer is 2xx;
- ``{"kind": "tcp", "port": n}``: a TCP connection to 127.0.0.1;
- ``{"kind": "unix", "path": p}``: a connection to a Unix socket;
- ``{"kind": "tls_without_certificate", "port": n}``: an HTTPS request to 127.0.0.1 without a
  client certificate (and without checking the server's): got through when anything answers;
- ``{"kind": "plain_http", "port": n, "path": p}``: plain HTTP to 127.0.0.1 (2xx gets through).
"""

import http.client
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request


def read(path):
    if os.path.isdir(path):
        return True, f"listed {len(os.listdir(path))} entries"
    with open(path, "rb") as handle:
        return True, f"read {len(handle.read(64))} bytes"


def walk(root):
    readable = []
    for directory, _subdirs, files in os.walk(root):  # os.walk skips what it cannot list
        if directory != root:
            readable.append(directory + "/")
        for name in files:
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as handle:
                    handle.read(1)
                readable.append(path)
            except OSError:
                pass
    return bool(readable), readable


def http_request(url, method="GET", headers=None, body=None):
    data = body.encode() if isinstance(body, str) else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())
    try:
        with opener.open(request, timeout=10) as answer:
            return 200 <= answer.status < 300, f"{answer.status}: {answer.read(200)!r}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def tcp(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return True, "connected"


def unix(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        return True, "connected"


def tls_without_certificate(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        connection.request("GET", "/")
        answer = connection.getresponse()
        return True, f"HTTP {answer.status}"
    finally:
        connection.close()


def plain_http(port, path="/"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return 200 <= answer.status < 300, f"HTTP {answer.status}"
    finally:
        connection.close()


PROBES = {
    "read": lambda p: read(p["path"]),
    "walk": lambda p: walk(p["root"]),
    "http": lambda p: http_request(
        p["url"], p.get("method", "GET"), p.get("headers"), p.get("body")
    ),
    "tcp": lambda p: tcp(p["port"]),
    "unix": lambda p: unix(p["path"]),
    "tls_without_certificate": lambda p: tls_without_certificate(p["port"]),
    "plain_http": lambda p: plain_http(p["port"], p.get("path", "/")),
}


def main():
    results = []
    for probe in json.load(sys.stdin):
        try:
            succeeded, detail = PROBES[probe["kind"]](probe)
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            succeeded, detail = False, f"{type(exc).__name__}: {exc}"
        results.append({"probe": probe, "succeeded": succeeded, "detail": detail})
    json.dump({"uid": os.getuid(), "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
