"""Peak server memory under decompression bombs: ``python tools/bomb_rss.py [--bombs 4] [--side 6000]``.

Starts ``photoveil serve`` (tiny-cls, loopback, port 0) in a child process, warms it up
with one small PNG, then sends ``--bombs`` concurrent ``Recognize`` calls, each a PNG of
``side x side`` zeros (~105 KB for 6000), and reads the server's ``VmHWM`` (peak RSS) and
``VmRSS`` from ``/proc/<pid>/status`` before and after. ``--max-image-pixels`` defaults to
40 MP (the old default limit) so the bombs are decoded rather than refused from the header.
Prints one JSON record (``--out FILE`` also saves it) and a table line.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def status_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


def zero_png(side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, format="PNG")
    return buf.getvalue()


def start(config: dict, workdir: Path) -> tuple[subprocess.Popen, str]:
    path = workdir / "server.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "photoveil.server.cli", "serve", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=open(workdir / "server.log", "ab"), env=env, text=True,
                            cwd=workdir)  # not the checkout: -m would import from the cwd first
    line = proc.stdout.readline()
    if not line.startswith("serving on port "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}; see {workdir / 'server.log'}")
    return proc, f"127.0.0.1:{int(line.split()[-1])}"


def measure(bombs: int = 4, side: int = 6000, max_image_pixels: int = 40_000_000,
            max_concurrent_decodes: int | None = None) -> dict:
    import grpc

    from photoveil import wire
    from photoveil.server.health import wait_serving
    from photoveil.v1 import recognition_pb2 as pb, recognition_pb2_grpc
    from photoveil.v1.tensor_pb2 import Input

    limits = {"max_image_pixels": max_image_pixels}
    if max_concurrent_decodes is not None:
        limits["max_concurrent_decodes"] = max_concurrent_decodes
    with tempfile.TemporaryDirectory() as tmp:
        proc, target = start({"bind": "127.0.0.1:0", "gallery_path": ":memory:", "torch_threads": 1,
                              "models": [{"id": "tiny-cls", "source": "tiny"}], "limits": limits}, Path(tmp))
        try:
            wait_serving(target)
            import torch

            small = wire.encode_image(torch.rand(3, 64, 64))
            stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
            stub.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=Input(encoded_image=small)), timeout=30)
            before = status_kb(proc.pid)
            bomb = zero_png(side)
            codes, seconds = [None] * bombs, [0.0] * bombs

            def send(i: int) -> None:
                channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
                t0 = time.perf_counter()
                try:
                    recognition_pb2_grpc.RecognitionServiceStub(channel).Recognize(
                        pb.RecognizeRequest(model_id="tiny-cls", input=Input(encoded_image=bomb)), timeout=120)
                    codes[i] = "OK"
                except grpc.RpcError as exc:
                    codes[i] = exc.code().name
                seconds[i] = time.perf_counter() - t0
                channel.close()

            threads = [threading.Thread(target=send, args=(i,)) for i in range(bombs)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = status_kb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(60)
    return {"bombs": bombs, "side": side, "png_bytes": len(bomb), "max_image_pixels": max_image_pixels,
            "codes": codes, "max_seconds": round(max(seconds), 2),
            "hwm_before_mb": round(before["VmHWM"] / 1024, 1), "hwm_after_mb": round(after["VmHWM"] / 1024, 1),
            "peak_increase_mb": round((after["VmHWM"] - before["VmHWM"]) / 1024, 1),
            "rss_after_mb": round(after["VmRSS"] / 1024, 1),
            "held_after_mb": round((after["VmRSS"] - before["VmRSS"]) / 1024, 1), "exit_code": exit_code}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bombs", type=int, default=4)
    parser.add_argument("--side", type=int, default=6000)
    parser.add_argument("--max-image-pixels", type=int, default=40_000_000)
    parser.add_argument("--max-concurrent-decodes", type=int, default=None)
    parser.add_argument("--out", help="also save the JSON record here")
    args = parser.parse_args(argv)
    record = measure(args.bombs, args.side, args.max_image_pixels, args.max_concurrent_decodes)
    print(json.dumps(record))
    print(f"| {record['bombs']} x {record['side']}^2 zero PNG | peak RSS {record['hwm_before_mb']} -> "
          f"{record['hwm_after_mb']} MB (+{record['peak_increase_mb']}) | held after {record['held_after_mb']} MB "
          f"| slowest {record['max_seconds']} s | {', '.join(map(str, record['codes']))} |")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
