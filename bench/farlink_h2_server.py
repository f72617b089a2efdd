"""A far link over HTTP/2 (and HTTP/1.1) with TLS, on loopback, for the bench scripts: an
ASGI app for hypercorn (PyPI) that waits LATENCY seconds before each response's head and
lets each TCP connection carry at most RATE bytes/s, all of its streams together (so one
HTTP/2 connection is as bound as one HTTP/1.1 connection). Byte ranges, a strong ETag.

    FARLINK_ROOT=DIR FARLINK_LATENCY=0.6 FARLINK_RATE=2000000 [FARLINK_TRACE=FILE] \
      hypercorn --certfile CERT --keyfile KEY -b 127.0.0.1:PORT farlink_h2_server:app

With FARLINK_TRACE, writes a line a second: seconds since the first request, requests in
flight at the most during that second, connections that had one open.
"""
import asyncio, os, time

ROOT = os.environ["FARLINK_ROOT"]
LATENCY = float(os.environ.get("FARLINK_LATENCY", "0.6"))
RATE = float(os.environ.get("FARLINK_RATE", "2000000"))
TRACE = os.environ.get("FARLINK_TRACE")
CHUNK = 32768

state = {"now": 0, "second": 0, "first": None, "clients": set()}
# Per connection (client address and port): when its link is free again.
link_free_at = {}


async def trace():
    with open(TRACE, "w", buffering=1) as out:
        while True:
            await asyncio.sleep(1)
            if state["first"] is None:
                continue
            at = time.monotonic() - state["first"]
            out.write(f"{at:.0f} {state['second']} {len(state['clients'])}\n")
            state["second"] = state["now"]
            state["clients"] = set()


async def pace(client, size):
    """Waits until the connection has carried `size` more bytes at RATE."""
    now = time.monotonic()
    free = max(link_free_at.get(client, now), now) + size / RATE
    link_free_at[client] = free
    if free > now:
        await asyncio.sleep(free - now)


async def respond(scope, send, client):
    await asyncio.sleep(LATENCY)
    relative = scope["path"].lstrip("/")
    path = os.path.join(ROOT, relative)
    if ".." in relative.split("/") or not os.path.isfile(path):
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    total = os.path.getsize(path)
    start, end, status = 0, total, 200
    headers = dict(scope["headers"])
    wanted = headers.get(b"range", b"").decode()
    if wanted.startswith("bytes="):
        first, _, last = wanted[6:].partition("-")
        start, end, status = int(first), min(int(last) + 1 if last else total, total), 206
    out = [(b"content-length", str(end - start).encode()), (b"accept-ranges", b"bytes"),
           (b"etag", f'"{total:x}"'.encode())]
    if status == 206:
        out.append((b"content-range", f"bytes {start}-{end - 1}/{total}".encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    if scope["method"] == "HEAD":
        await send({"type": "http.response.body", "body": b""})
        return
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            left -= len(chunk)
            await pace(client, len(chunk))
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
    if end == start:
        await send({"type": "http.response.body", "body": b""})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if TRACE:
                    asyncio.get_running_loop().create_task(trace())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    client = tuple(scope.get("client") or ())
    if state["first"] is None:
        state["first"] = time.monotonic()
    state["now"] += 1
    state["second"] = max(state["second"], state["now"])
    state["clients"].add(client)
    try:
        await respond(scope, send, client)
    finally:
        state["now"] -= 1
