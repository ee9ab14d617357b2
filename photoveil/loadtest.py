"""``photoveil loadtest``: throughput and latency of the server, batching on vs off.

Loopback only and bounded: for each setting it starts ``photoveil serve`` on a free
127.0.0.1 port in a child process (so client and server do not share one interpreter
lock), drives it, and stops it with SIGTERM. Each setting ends after ``--requests``
requests or ``--seconds`` seconds, whichever comes first.

* closed loop: ``C`` clients each keep one ``Recognize`` call in flight (gRPC futures on
  one channel per client) -> peak throughput and p50/p99 at that load;
* open loop: requests sent at a fixed rate of half the setting's peak closed-loop
  throughput -> p99 latency at half of peak (``--no-half-load`` skips it).

Records (``--json``): ``batching``, ``mode`` (closed | open), ``clients``,
``offered_rps`` (open loop), ``requests``, ``errors``, ``seconds``, ``throughput_rps``,
``p50_ms``, ``p90_ms``, ``p99_ms``, ``model``, ``payload`` and ``bytes_per_request``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODEL_SOURCES = ("zoo", "tiny", "registry")
WARMUP_REQUESTS = 500  # per client count, before the measured window


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loadtest", help="loopback throughput / latency with batching on and off",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="zoo:vgg13_bn",
                   help="SOURCE:NAME served, SOURCE one of zoo | tiny | registry (default zoo:vgg13_bn)")
    p.add_argument("--clients", default="32", help="comma list of concurrent clients (default 32)")
    p.add_argument("--batching", default="on,off", help="comma list of on | off (default both)")
    p.add_argument("--requests", type=int, default=5000,
                   help="at most this many measured requests per setting (default 5000)")
    p.add_argument("--seconds", type=float, default=20.0, help="at most this long per setting")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--payload", choices=("tensor", "png"), default="tensor",
                   help="send raw FP32 tensors (KServe v2) or PNG-encoded images")
    p.add_argument("--no-half-load", dest="half_load", action="store_false",
                   help="skip the open-loop run at half of peak throughput")
    p.add_argument("--server-threads", type=int, default=0, help="torch threads in the server (0: default)")
    p.add_argument("--replicas", type=int, default=0,
                   help="instead: N servers sharing --gallery-url, enrolments through a round-robin client, "
                        "one replica SIGKILLed mid-load; checks no acknowledged enrolment is lost")
    p.add_argument("--gallery-url", default="", help="postgresql://... database for --replicas")
    p.add_argument("--kill-after-s", type=float, default=3.0, help="--replicas: kill replica 0 this far into a run")
    p.add_argument("--repeat", type=int, default=1, help="--replicas: runs, each with fresh servers [1]")
    p.add_argument("--json", action="store_true", help="print one JSON record per line")
    p.add_argument("--out", help="folder for loadtest.json and loadtest.md")
    p.set_defaults(func=main)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


class ServeProcess:
    """``photoveil serve`` with ``config`` (a dict; bind it to 127.0.0.1:0) in a child process."""

    def __init__(self, config: dict, workdir: Path, name: str = "serve"):
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(config))
        self.log = workdir / f"{name}.log"  # a file: a full pipe would block the server
        with self.log.open("a") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "photoveil.cli", "serve", "--config", str(path)],
                                         stdout=subprocess.PIPE, stderr=err, text=True)
        deadline = time.monotonic() + 120
        port = None
        while time.monotonic() < deadline and port is None:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("serving on port "):
                port = int(line.split()[-1])
        if port is None:
            self.stop()
            err = self.log.read_text()[-2000:]
            from photoveil.errors import PhotoveilError

            raise PhotoveilError(f"the server did not start:\n{err}")
        self.target = f"127.0.0.1:{port}"
        from photoveil.server.health import wait_serving

        wait_serving(self.target, timeout=60)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Server(ServeProcess):
    """The load test's server: one model, batching on or off, an in-memory gallery."""

    def __init__(self, source: str, name: str, batching: bool, max_batch_size: int, max_wait_ms: float,
                 torch_threads: int, workdir: Path):
        config = {"bind": "127.0.0.1:0", "gallery_path": ":memory:", "workers": 128, "grace_s": 5.0,
                  "torch_threads": torch_threads, "models": [{"id": name, "source": source, "name": name}],
                  "batching": {"enabled": batching, "max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms}}
        super().__init__(config, workdir, f"serve-{'on' if batching else 'off'}")


def _request(model: str, payload: str, size: int):
    import torch

    from photoveil import wire
    from photoveil.v1 import recognition_pb2 as pb, tensor_pb2

    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    if payload == "png":
        inp = tensor_pb2.Input(encoded_image=wire.encode_image(image, "PNG"))
    else:
        inp = tensor_pb2.Input(tensor=wire.torch_to_proto(image.unsqueeze(0), "image"))
    return pb.RecognizeRequest(model_id=model, input=inp, top_k=1)


class Driver:
    """Sends requests with gRPC futures and records per-request latency."""

    def __init__(self, target: str, request, channels: int):
        import grpc

        from photoveil.v1 import recognition_pb2_grpc

        self.channels = [grpc.insecure_channel(target) for _ in range(max(1, channels))]
        self.stubs = [recognition_pb2_grpc.RecognitionServiceStub(c) for c in self.channels]
        self.request = request
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def close(self) -> None:
        for c in self.channels:
            c.close()

    def _send(self, i: int, on_done) -> None:
        t0 = time.perf_counter()
        future = self.stubs[i % len(self.stubs)].Recognize.future(self.request, timeout=30)

        def done(f):
            ms = (time.perf_counter() - t0) * 1e3
            exc = f.exception()
            with self.lock:
                if exc is None:
                    self.latencies.append(ms)
                else:
                    key = exc.code().name if hasattr(exc, "code") else type(exc).__name__
                    self.errors[key] = self.errors.get(key, 0) + 1
            on_done()

        future.add_done_callback(done)

    def closed_loop(self, clients: int, max_requests: int, max_seconds: float) -> float:
        """Each of ``clients`` keeps one call in flight; returns the elapsed seconds."""
        sent = [0]
        finished = threading.Event()
        outstanding = [0]
        deadline = time.perf_counter() + max_seconds

        def next_call(slot: int):
            def on_done():
                with self.lock:
                    outstanding[0] -= 1
                    go = sent[0] < max_requests and time.perf_counter() < deadline
                    if go:
                        sent[0] += 1
                        outstanding[0] += 1
                    elif outstanding[0] == 0:
                        finished.set()
                if go:
                    self._send(slot, on_done)
            return on_done

        t0 = time.perf_counter()
        with self.lock:
            n = min(clients, max_requests)
            sent[0] = outstanding[0] = n
        for slot in range(n):
            self._send(slot, next_call(slot))
        finished.wait(max_seconds + 60)
        return time.perf_counter() - t0

    def open_loop(self, rate: float, max_requests: int, max_seconds: float) -> float:
        """Requests at ``rate`` per second regardless of answers; returns elapsed seconds."""
        total = int(min(max_requests, rate * max_seconds))
        pending = threading.Semaphore(0)
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self._send(i, pending.release)
        for _ in range(total):
            pending.acquire(timeout=60)
        return time.perf_counter() - t0


def _record(driver: Driver, seconds: float, **fields) -> dict:
    lat = driver.latencies
    return {**fields, "requests": len(lat) + sum(driver.errors.values()), "errors": sum(driver.errors.values()),
            "error_codes": driver.errors, "seconds": round(seconds, 3),
            "throughput_rps": round(len(lat) / seconds, 1) if seconds > 0 else 0.0,
            "p50_ms": round(_percentile(lat, 50), 2), "p90_ms": round(_percentile(lat, 90), 2),
            "p99_ms": round(_percentile(lat, 99), 2)}


def run_loadtest(model: str = "zoo:vgg13_bn", clients: list[int] = (32,), batching: list[bool] = (True, False),
                 max_requests: int = 5000, max_seconds: float = 20.0, max_batch_size: int = 32,
                 max_wait_ms: float = 5.0, payload: str = "tensor", half_load: bool = True,
                 server_threads: int = 0, log=print) -> list[dict]:
    from photoveil.errors import InvalidInput

    source, _, name = model.partition(":")
    if source not in MODEL_SOURCES or not name:
        raise InvalidInput(f"--model {model!r} must be SOURCE:NAME with SOURCE one of {', '.join(MODEL_SOURCES)}")
    if not 1 <= max_requests <= 1_000_000 or not 0 < max_seconds <= 3600:
        raise InvalidInput("--requests must be in 1..1000000 and --seconds in (0, 3600]")
    if not clients or any(not 1 <= c <= 1024 for c in clients):
        raise InvalidInput("--clients must be integers in 1..1024")
    size = 32
    if source == "registry":
        from photoveil.facemodels import registry

        size = registry.get_spec(name).input_size[0]
    request = _request(name, payload, size)
    common = {"model": model, "payload": payload, "bytes_per_request": request.ByteSize()}
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="photoveil-loadtest-") as tmp:
        for on in batching:
            log(f"loadtest: starting the server (batching {'on' if on else 'off'}) ...")
            server = Server(source, name, on, max_batch_size, max_wait_ms, server_threads, Path(tmp))
            try:
                warm = Driver(server.target, request, 1)
                warm.closed_loop(1, 20, 10)  # first calls load / trace the model
                warm.close()
                for c in clients:
                    # Unmeasured warm-up at this concurrency: the server's handler threads and
                    # the allocator's pools grow during the first burst, not in the window.
                    warm = Driver(server.target, request, c)
                    warm.closed_loop(c, max(c, min(WARMUP_REQUESTS, max_requests // 4)), 10)
                    warm.close()
                    driver = Driver(server.target, request, c)
                    secs = driver.closed_loop(c, max_requests, max_seconds)
                    driver.close()
                    records.append(_record(driver, secs, batching=on, mode="closed", clients=c, **common))
                    log(f"  {c} clients: {records[-1]['throughput_rps']} req/s, p99 {records[-1]['p99_ms']} ms")
                if half_load:
                    peak = max(r["throughput_rps"] for r in records if r["batching"] == on and r["mode"] == "closed")
                    rate = max(1.0, peak / 2)  # half of this setting's own peak
                    driver = Driver(server.target, request, max(clients))
                    secs = driver.open_loop(rate, max_requests, max_seconds)
                    driver.close()
                    records.append(_record(driver, secs, batching=on, mode="open", clients=max(clients),
                                           offered_rps=round(rate, 1), **common))
                    log(f"  open loop at {rate:.0f} req/s: p99 {records[-1]['p99_ms']} ms")
            finally:
                server.stop()
    return records


REPLICA_MODEL = "tiny-embed"


def run_replica_kill(gallery_url: str, replicas: int = 2, clients: int = 32, seconds: float = 8.0,
                     kill_after_s: float = 3.0, repeat: int = 1, log=print) -> list[dict]:
    """``replicas`` servers sharing the PostgreSQL gallery at ``gallery_url``; ``clients`` threads
    enrol through one round-robin client; replica 0 is SIGKILLed ``kill_after_s`` into each run.
    Afterwards every acknowledged record must be in the database under its identity."""
    import uuid

    import torch

    from photoveil.client.transport import RecognitionClient, RetryPolicy, RpcFailed
    from photoveil.errors import InvalidInput
    from photoveil.server.gallery_pg import PostgresGallery

    if not 2 <= replicas <= 16 or not 1 <= clients <= 1024 or not 1 <= repeat <= 100:
        raise InvalidInput("--replicas must be in 2..16, --clients in 1..1024, --repeat in 1..100")
    if not 0 < kill_after_s < seconds:
        raise InvalidInput(f"--kill-after-s {kill_after_s} must be in (0, --seconds {seconds})")
    PostgresGallery(gallery_url, pool_size=1).close()  # reachable and migrated, before any server starts
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    config = {"bind": "127.0.0.1:0", "gallery_url": gallery_url, "workers": 64, "grace_s": 5.0, "torch_threads": 1,
              "models": [{"id": REPLICA_MODEL, "source": "tiny"}], "batching": {"max_batch_size": 16, "max_wait_ms": 2}}
    records = []
    for run in range(repeat):
        tag = uuid.uuid4().hex[:8]
        with tempfile.TemporaryDirectory(prefix="photoveil-replicas-") as tmp:
            with ThreadPoolExecutor(replicas) as pool:  # start together: each takes seconds to import torch
                servers = list(pool.map(lambda i: ServeProcess(config, Path(tmp), f"replica-{i}"), range(replicas)))
            client = RecognitionClient([s.target for s in servers], timeout_s=10,
                                       retry=RetryPolicy(retries=8, initial_backoff_s=0.05, max_backoff_s=1.0))
            lock, stop, killed = threading.Lock(), threading.Event(), threading.Event()
            acked: dict[int, str] = {}
            errors: dict[str, int] = {}
            latencies: list[float] = []
            after_kill = [0]

            def worker(w: int) -> None:
                i = 0
                while not stop.is_set():
                    identity = f"{tag}-w{w}-{i}"
                    t0 = time.perf_counter()
                    try:
                        reply = client.enroll(REPLICA_MODEL, identity, image)
                    except RpcFailed as exc:
                        with lock:
                            errors[exc.code.name] = errors.get(exc.code.name, 0) + 1
                        continue
                    with lock:
                        acked.update({rid: identity for rid in reply.record_ids})
                        latencies.append((time.perf_counter() - t0) * 1e3)
                        after_kill[0] += killed.is_set()
                    i += 1

            threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(clients)]
            t0 = time.perf_counter()
            try:
                for t in threads:
                    t.start()
                time.sleep(kill_after_s)
                before = len(acked)
                servers[0].kill()
                killed.set()
                time.sleep(seconds - kill_after_s)
                stop.set()
                for t in threads:
                    t.join(30)
                elapsed = time.perf_counter() - t0
            finally:
                stop.set()
                client.close()
                for server in servers:
                    server.stop()
        store = PostgresGallery(gallery_url, pool_size=1)
        try:
            stored = store.record_identities()
        finally:
            store.close()
        lost = sum(1 for rid, who in acked.items() if stored.get(rid) != who)
        records.append({"mode": "replica-kill", "run": run + 1, "replicas": replicas, "clients": clients,
                        "enrolments": len(acked), "before_kill": before, "after_kill": after_kill[0],
                        "errors": sum(errors.values()), "error_codes": errors, "lost": lost,
                        "seconds": round(elapsed, 2), "throughput_rps": round(len(acked) / elapsed, 1),
                        "p50_ms": round(_percentile(latencies, 50), 2), "p99_ms": round(_percentile(latencies, 99), 2)})
        r = records[-1]
        log(f"  run {r['run']}: {r['enrolments']} acknowledged ({r['after_kill']} after the kill), "
            f"{r['errors']} errors, {r['lost']} lost")
    return records


def replica_table(records: list[dict]) -> str:
    cols = ["run", "replicas", "clients", "enrolments", "before_kill", "after_kill", "errors", "lost",
            "throughput_rps", "p50_ms", "p99_ms"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in records]
    return "\n".join(lines)


def table(records: list[dict]) -> str:
    cols = ["batching", "mode", "clients", "offered_rps", "requests", "errors", "throughput_rps", "p50_ms", "p99_ms"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        lines.append("| " + " | ".join(("on" if r[c] else "off") if c == "batching" else str(r.get(c, "-"))
                                       for c in cols) + " |")
    return "\n".join(lines)


def speedups(records: list[dict]) -> dict[int, float]:
    """Closed-loop throughput with batching on / off, per client count."""
    out = {}
    for r in records:
        if r["mode"] == "closed" and r["batching"]:
            off = [o for o in records if o["mode"] == "closed" and not o["batching"] and o["clients"] == r["clients"]]
            if off and off[0]["throughput_rps"] > 0:
                out[r["clients"]] = round(r["throughput_rps"] / off[0]["throughput_rps"], 2)
    return out


def main(args) -> int:
    from photoveil.errors import InvalidInput

    try:
        clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        raise InvalidInput(f"--clients {args.clients!r} must be a comma list of integers") from None
    flags = [b.strip() for b in args.batching.split(",") if b.strip()]
    if not flags or any(b not in ("on", "off") for b in flags):
        raise InvalidInput(f"--batching {args.batching!r}: give on, off or on,off")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.replicas:
        if not args.gallery_url:
            raise InvalidInput("--replicas needs --gallery-url postgresql://... (the gallery the replicas share)")
        records = run_replica_kill(args.gallery_url, args.replicas, clients[0] if clients else 32,
                                   min(args.seconds, 600.0), args.kill_after_s, args.repeat, log=log)
        print("\n".join(json.dumps(r) for r in records) if args.json else replica_table(records))
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "replicas.json").write_text(json.dumps({"records": records}, indent=2) + "\n")
            (out / "replicas.md").write_text(replica_table(records) + "\n")
        return 1 if any(r["errors"] or r["lost"] for r in records) else 0
    records = run_loadtest(args.model, clients, [b == "on" for b in flags], args.requests, args.seconds,
                           args.max_batch_size, args.max_wait_ms, args.payload, args.half_load,
                           args.server_threads, log=log)
    gain = speedups(records)
    if args.json:
        for r in records:
            print(json.dumps(r))
    else:
        print(table(records))
        for c, x in gain.items():
            print(f"batching on / off at {c} clients: {x}x throughput")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "loadtest.json").write_text(json.dumps({"records": records, "speedup": gain}, indent=2) + "\n")
        (out / "loadtest.md").write_text(table(records) + "\n")
    return 1 if any(r["errors"] for r in records) else 0
