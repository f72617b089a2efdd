"""A far or thin link on loopback, for the bench scripts: every response waits LATENCY
seconds before its first byte; each connection carries at most RATE bytes/s, or, with
--total, all connections together do. HTTP/1.1 keep-alive, byte ranges, a strong ETag.

    python3 farlink_server.py ROOT PORT LATENCY RATE [--total] [--trace FILE] [HOST...]

Serves the files under ROOT (by path, no '..') on each HOST (default 127.0.0.1) and PORT;
on SIGTERM prints the most requests it had in flight at once. With --trace, writes a line
a second to FILE: seconds since the first request, requests in flight at the most during
that second, open connections at its end.
"""
import http.server, os, signal, sys, threading, time

argv = sys.argv[1:]
trace_path = None
if "--trace" in argv:
    at = argv.index("--trace")
    trace_path = argv[at + 1]
    del argv[at:at + 2]
args = [a for a in argv if a != "--total"]
total_mode = "--total" in argv
root, port, latency, rate = args[0], int(args[1]), float(args[2]), float(args[3])
hosts = args[4:] or ["127.0.0.1"]
bucket_lock = threading.Lock()
bucket = {"next": time.monotonic()}
in_flight = {"now": 0, "max": 0, "second": 0, "connections": 0, "first": None}


def pace(sent_now, began, sent_total):
    """Sleeps so the connection (or, with --total, the whole server) keeps to RATE."""
    if total_mode:
        with bucket_lock:
            start = max(bucket["next"], time.monotonic())
            bucket["next"] = start + sent_now / rate
        wait = bucket["next"] - time.monotonic()
    else:
        wait = sent_total / rate - (time.monotonic() - began)
    if wait > 0:
        time.sleep(wait)


class Link(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with bucket_lock:
            in_flight["connections"] += 1

    def finish(self):
        with bucket_lock:
            in_flight["connections"] -= 1
        super().finish()

    def do_HEAD(self):
        self.answer(False)

    def do_GET(self):
        self.answer(True)

    def answer(self, body):
        with bucket_lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
            in_flight["second"] = max(in_flight["second"], in_flight["now"])
            if in_flight["first"] is None:
                in_flight["first"] = time.monotonic()
        try:
            self.respond(body)
        finally:
            with bucket_lock:
                in_flight["now"] -= 1

    def respond(self, body):
        time.sleep(latency)
        relative = self.path.split("?")[0].lstrip("/")
        path = os.path.join(root, relative)
        if ".." in relative.split("/") or not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        total = os.path.getsize(path)
        start, end, status = 0, total, 200
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes="):
            first, _, last = wanted[6:].partition("-")
            start, end, status = int(first), (int(last) + 1 if last else total), 206
            end = min(end, total)
            if start >= end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{total:x}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{total}")
        self.end_headers()
        if not body:
            return
        with open(path, "rb") as f:
            f.seek(start)
            sent, began = 0, time.monotonic()
            while sent < end - start:
                chunk = f.read(min(32768, end - start - sent))
                self.wfile.write(chunk)
                sent += len(chunk)
                pace(len(chunk), began, sent)


def report(*_):
    print(f"most requests in flight at once: {in_flight['max']}", flush=True)
    os._exit(0)


def trace():
    with open(trace_path, "w", buffering=1) as out:
        while True:
            time.sleep(1)
            with bucket_lock:
                if in_flight["first"] is None:
                    continue
                at = time.monotonic() - in_flight["first"]
                out.write(f"{at:.0f} {in_flight['second']} {in_flight['connections']}\n")
                in_flight["second"] = in_flight["now"]


signal.signal(signal.SIGTERM, report)
if trace_path:
    threading.Thread(target=trace, daemon=True).start()
http.server.ThreadingHTTPServer.request_queue_size = 1024
http.server.ThreadingHTTPServer.daemon_threads = True
servers = [http.server.ThreadingHTTPServer((host, port), Link) for host in hosts]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
