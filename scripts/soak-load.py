#!/usr/bin/env python3
"""Fixed-rate mixed HTTPS load for scripts/soak (bounded: stops after --seconds).

Requests are sent on a fixed schedule (open loop: a late request is sent late, never skipped, and
its lateness counts in its latency) by a few threads with a keep-alive connection each, to the
routes a mobile client uses most: profile, Alpaca account and positions, orders placed and
cancelled, token refresh, and now and then a login (bcrypt). Targets 127.0.0.1 only.
"""
import argparse, http.client, json, os, ssl, threading, time
from collections import defaultdict
from urllib.parse import urlsplit

PASSWORD = "Tq7!vexing-Walrus-orbit"
# (name, weight): out of 100 requests.
MIX = [("GET /v1/me", 45), ("GET /v1/alpaca/account", 15), ("GET /v1/alpaca/positions", 10),
       ("GET /healthz", 10), ("POST /v1/alpaca/orders", 6), ("DELETE /v1/alpaca/orders/{id}", 6),
       ("POST /v1/auth/refresh", 7), ("POST /v1/auth/login", 1)]

def proc_sample(pid):
    rss_kib = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return rss_kib / 1024.0, len(os.listdir(f"/proc/{pid}/fd"))

def postgres_sample(postmaster):
    """PostgreSQL is many processes (the postmaster, one backend per connection) sharing memory:
    their PSS, in which each shared page counts once in all, and how many there are."""
    pids = [postmaster] + [int(p) for p in open(f"/proc/{postmaster}/task/{postmaster}/children").read().split()]
    pss_kib = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            pss_kib += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
    return pss_kib / 1024.0, len(pids)

class Client:
    def __init__(self, base, context):
        self.host, self.port = urlsplit(base).hostname, urlsplit(base).port
        self.context = context
        self.connection = None

    def request(self, method, path, body=None, token=None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=10)
            try:
                self.connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.connection.close(); self.connection = None
                return response.status, data
            except (ConnectionError, http.client.HTTPException, OSError):
                self.connection.close(); self.connection = None
                if attempt == 1:
                    raise

class Session:
    """One signed-in user shared by the workers; refresh rotates its tokens (C-2)."""
    def __init__(self, client):
        self.lock = threading.Lock()
        status, data = client.request("POST", "/v1/auth/login", {"email": "bench@example.com", "password": PASSWORD})
        assert status == 200, (status, data)
        body = json.loads(data)
        self.access, self.refresh = body["access_token"], body["refresh_token"]
        self.open_orders = []

def one_request(name, client, session):
    if name == "POST /v1/auth/refresh":
        with session.lock:  # one rotation at a time: a rotated token presented twice would be reuse
            status, data = client.request("POST", "/v1/auth/refresh", {"refresh_token": session.refresh})
            if status == 200:
                body = json.loads(data)
                session.access, session.refresh = body["access_token"], body["refresh_token"]
        return status
    if name == "POST /v1/auth/login":
        return client.request("POST", "/v1/auth/login", {"email": "bench@example.com", "password": PASSWORD})[0]
    token = session.access
    if name == "POST /v1/alpaca/orders":
        order = {"symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "day", "qty": "1", "limit_price": "1.00"}
        status, data = client.request("POST", "/v1/alpaca/orders", order, token)
        if status == 201:
            with session.lock:
                session.open_orders.append(json.loads(data)["id"])
        return status
    if name == "DELETE /v1/alpaca/orders/{id}":
        with session.lock:
            order_id = session.open_orders.pop(0) if session.open_orders else None
        if order_id is None:
            return None
        return client.request("DELETE", f"/v1/alpaca/orders/{order_id}", None, token)[0]
    method, path = name.split(" ", 1)
    return client.request(method, path, None, token)[0]

def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--rate", type=float, default=40)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--process", action="append", default=[], help="name=pid")
    args = parser.parse_args()
    assert urlsplit(args.base).hostname in ("localhost", "127.0.0.1"), "loopback only"
    processes = dict(item.split("=") for item in args.process)

    def sample(label):
        row = {}
        for name, pid in processes.items():
            row[name] = postgres_sample(int(pid)) if name == "postgres" else proc_sample(int(pid))
        print(f"{label} (load average {open('/proc/loadavg').read().split()[0]}): " + ", ".join(f"{n} {r:.1f} MiB/{f} {'procs' if n == 'postgres' else 'fds'}" for n, (r, f) in row.items()), flush=True)
        return row

    context = ssl.create_default_context(cafile=args.ca)
    idle = sample("idle")
    session = Session(Client(args.base, context))
    schedule = [name for name, weight in MIX for _ in range(weight)]
    # Spread each route evenly over the cycle rather than in runs of one route.
    schedule = [schedule[(i * 37) % len(schedule)] for i in range(len(schedule))]
    latencies, statuses = defaultdict(list), defaultdict(lambda: defaultdict(int))
    lock = threading.Lock()
    interval = 1.0 / args.rate
    start = time.monotonic() + 0.5
    total = int((args.warmup + args.seconds) * args.rate)
    measured_from = int(args.warmup * args.rate)
    marks = {}

    def worker(index):
        client = Client(args.base, context)
        for n in range(index, total, args.threads):
            due = start + n * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            name = schedule[n % len(schedule)]
            try:
                status = one_request(name, client, session)
            except Exception as error:  # no answer at all counts as an error of its own
                status = f"error {type(error).__name__}"
            elapsed = time.monotonic() - due
            if status is None or n < measured_from:
                continue
            with lock:
                latencies[name].append(elapsed)
                statuses[name][status] += 1

    def sampler():
        time.sleep(max(0, start + args.warmup - time.monotonic()))
        marks["start"] = sample("load start (after warm-up)")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)] + [threading.Thread(target=sampler)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    end = sample("load end")

    print(f"\n{args.seconds} s at {args.rate:.0f} requests/s after a {args.warmup} s warm-up; latency from the scheduled send time")
    print("| route | requests | p50 ms | p99 ms | statuses |")
    print("|---|---|---|---|---|")
    for name, _ in MIX:
        values = latencies[name]
        print(f"| `{name}` | {len(values)} | {percentile(values, 50) * 1000:.1f} | {percentile(values, 99) * 1000:.1f} | "
              + ", ".join(f"{s}: {c}" for s, c in sorted(statuses[name].items(), key=str)) + " |")
    print("\n| process | idle RSS MiB | RSS start → end MiB | growth | fds start → end |")
    print("|---|---|---|---|---|")
    for name in processes:
        (idle_rss, _), (rss0, fd0), (rss1, fd1) = idle[name], marks["start"][name], end[name]
        label = "postgres (PSS, processes)" if name == "postgres" else name
        print(f"| {label} | {idle_rss:.1f} | {rss0:.1f} → {rss1:.1f} | {(rss1 - rss0) / rss0 * 100:+.1f} % | {fd0} → {fd1} |")

if __name__ == "__main__":
    main()
