"""A bounded HTTP/1.1 load generator, run as its own process by bench/serving.py (loopback only).

Open loop (``--rate R``): requests are scheduled at a constant rate for
``--duration`` seconds and each latency runs from the scheduled send time to
the last byte of the answer, so a server that falls behind is charged for the
queue (no coordinated omission). Closed loop (no ``--rate``): ``--connections``
clients send back to back; that measures the largest throughput. Requests
come from a JSON file: a list of ``[method, path, body or null]`` used in turn.

    python bench/_loadgen.py --port 8000 --key KEY --requests reqs.json --rate 300 --duration 20

Prints one JSON object: sent, ok, failed (status >= 400, a broken
connection, or no answer within GRACE seconds after the run), unanswered, statuses, seconds, throughput (answers/s), p50/p90/p99/max (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np

#: seconds an open-loop run waits for answers after its last scheduled request; the rest are unanswered
GRACE = 5.0


def _request(method: str, path: str, body: object, key: str) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: {len(payload)}\r\n")
    if body is not None:
        head += "Content-Type: application/json\r\n"
    return (head + "\r\n").encode() + payload


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response; its status code."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def run(port: int, key: str, requests: list[bytes], rate: float | None, duration: float,
              connections: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failed = 0
    failed_connections = 0
    sent = 0
    queue: asyncio.Queue = asyncio.Queue()
    start = time.perf_counter()
    end = start + duration

    async def client() -> None:
        nonlocal failed, failed_connections, sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                if rate is None:
                    if time.perf_counter() >= end:
                        return
                    scheduled, raw = time.perf_counter(), requests[sent % len(requests)]
                    sent += 1
                else:
                    job = await queue.get()
                    if job is None:
                        return
                    scheduled, raw = job
                try:
                    writer.write(raw)
                    status = await _answer(reader)
                except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
                    failed += 1
                    failed_connections += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - scheduled)
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 400:
                    failed += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(connections)]
    if rate is not None:
        i = 0
        while True:
            at = start + i / rate
            if at >= end:
                break
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((at, requests[i % len(requests)]))
            i += 1
        sent = i
        for _ in tasks:
            queue.put_nowait(None)
    # a server far behind is not waited for beyond GRACE seconds after the run
    _, late = await asyncio.wait(tasks, timeout=max(end - time.perf_counter(), 0.0) + GRACE)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    unanswered = sent - len(latencies) - failed_connections
    seconds = time.perf_counter() - start
    ms = np.asarray(latencies) * 1e3 if latencies else np.zeros(1)
    return {"sent": sent, "ok": len(latencies) - sum(v for s, v in statuses.items() if s >= 400),
            "failed": failed + unanswered, "unanswered": unanswered, "statuses": {str(s): v for s, v in sorted(statuses.items())},
            "seconds": round(seconds, 2), "throughput": round(len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--requests", required=True, help="JSON list of [method, path, body or null]")
    ap.add_argument("--rate", type=float, default=None, help="requests/s (open loop); default: closed loop")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    with open(args.requests) as f:
        raw = [_request(m, p, b, args.key) for m, p, b in json.load(f)]
    print(json.dumps(asyncio.run(run(args.port, args.key, raw, args.rate, args.duration, args.connections))))


if __name__ == "__main__":
    main()
