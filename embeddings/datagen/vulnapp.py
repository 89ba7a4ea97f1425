#!/usr/bin/env python3
"""A deliberately SQL-injectable web page for the sqlmap scenario.

Runs only inside the wfg-server network namespace, bound to the address given
on the command line (never 0.0.0.0). GET /item?id=N builds its SQL by string
concatenation on purpose; the database is an in-memory SQLite with fake rows.
"""
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

DB = sqlite3.connect(":memory:", check_same_thread=False)
DB.executescript(
    """
    CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL);
    CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT, secret TEXT);
    """
)
DB.executemany("INSERT INTO items VALUES (?,?,?)",
               [(i, f"widget-{i}", 1.5 * i) for i in range(1, 21)])
DB.executemany("INSERT INTO users VALUES (?,?,?)",
               [(1, "alice", "not-a-real-secret-1"), (2, "bob", "not-a-real-secret-2")])
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "wfg-shop/0.1"

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    def _send(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/":
            self._send(200, '<html><body><a href="/item?id=1">item 1</a></body></html>')
            return
        if url.path != "/item":
            self._send(404, "<html><body>not found</body></html>")
            return
        item = parse_qs(url.query).get("id", ["1"])[0]
        query = "SELECT id, name, price FROM items WHERE id = " + item  # injectable
        try:
            with LOCK:
                rows = DB.execute(query).fetchall()
        except sqlite3.Error as e:
            self._send(500, f"<html><body>database error: {e}</body></html>")
            return
        body = "".join(f"<tr><td>{r[0]}</td><td>{r[1]}</td><td>{r[2]}</td></tr>" for r in rows)
        self._send(200, f"<html><body><table>{body}</table></body></html>")


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    if host in ("0.0.0.0", "", "::"):
        sys.exit("refusing to bind a wildcard address")
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
