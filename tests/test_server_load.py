"""Dynamic batching and many concurrent clients."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import torch

from photoveil import wire
from photoveil.server.batching import BatcherClosed, DynamicBatcher
from photoveil.server.config import BatchingConfig
from photoveil.server.model_host import ModelHost, ModelKind
from photoveil.server.testing import local_server
from photoveil.server.tiny_models import TinyNet
from photoveil.v1 import recognition_pb2 as pb, recognition_pb2_grpc
from photoveil.v1.tensor_pb2 import Input

torch.set_num_threads(1)


class Recorder:
    """A batched function that sleeps like a model and records batch sizes."""

    def __init__(self, delay=0.02, poison=None):
        self.delay, self.poison, self.sizes, self.lock = delay, poison, [], threading.Lock()

    def __call__(self, key, batch):
        time.sleep(self.delay)
        with self.lock:
            self.sizes.append(batch.shape[0])
        if self.poison is not None and bool((batch == self.poison).all(dim=1).any()):
            raise ValueError("poisoned item")
        return batch * 2


def submit_concurrently(batcher, items, key=lambda i: "k"):
    with ThreadPoolExecutor(len(items)) as pool:
        futures = list(pool.map(lambda i: batcher.submit(key(i), items[i]), range(len(items))))
    return futures


def test_concurrent_requests_are_coalesced():
    rec = Recorder()
    batcher = DynamicBatcher(rec, max_batch_size=16, max_wait_s=0.01)
    items = [torch.full((1, 4), float(i)) for i in range(40)]
    futures = submit_concurrently(batcher, items)
    for i, f in enumerate(futures):
        assert torch.equal(f.result(5), items[i] * 2)  # each request gets its own rows back
    batcher.close()
    assert sum(rec.sizes) == 40 and max(rec.sizes) <= 16
    assert len(rec.sizes) <= 10, rec.sizes  # 40 requests in a handful of forward passes
    assert batcher.stats.requests == 40 and batcher.stats.batches == len(rec.sizes)


def test_multi_item_requests_and_keys_do_not_mix():
    rec = Recorder(delay=0.005)
    batcher = DynamicBatcher(rec, max_batch_size=8, max_wait_s=0.01)
    a = batcher.submit(("m", (4,)), torch.ones(3, 4))
    b = batcher.submit(("m", (2,)), torch.ones(5, 2))
    c = batcher.submit(("m", (4,)), torch.zeros(20, 4))  # over max_batch_size: runs alone
    assert a.result(5).shape == (3, 4) and b.result(5).shape == (5, 2) and c.result(5).shape == (20, 4)
    batcher.close()
    assert sorted(rec.sizes) == [3, 5, 20]


def test_errors_are_isolated_per_request():
    rec = Recorder(poison=-1.0)
    batcher = DynamicBatcher(rec, max_batch_size=32, max_wait_s=0.02)
    items = [torch.full((1, 3), -1.0 if i == 7 else float(i)) for i in range(12)]
    futures = submit_concurrently(batcher, items)
    for i, f in enumerate(futures):
        if i == 7:
            with pytest.raises(ValueError, match="poisoned"):
                f.result(5)
        else:
            assert torch.equal(f.result(5), items[i] * 2)
    batcher.close()
    assert batcher.stats.fallbacks >= 1


def test_close_drains_then_refuses():
    batcher = DynamicBatcher(Recorder(delay=0.05), max_batch_size=4, max_wait_s=0.5)
    f = batcher.submit("k", torch.ones(1, 2))
    batcher.close()
    assert torch.equal(f.result(1), torch.full((1, 2), 2.0))  # queued work finished, not dropped
    with pytest.raises(BatcherClosed):
        batcher.submit("k", torch.ones(1, 2))


@pytest.mark.parametrize("kwargs, match", [({"max_batch_size": 0}, "max_batch_size"),
                                           ({"max_wait_s": 2.0}, "max_wait_s"), ({"workers": 0}, "workers")])
def test_batcher_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DynamicBatcher(lambda k, b: b, **kwargs)


class CountingNet(TinyNet):
    """TinyNet that counts forward calls and takes a little time per call, like a real model."""

    def __init__(self):
        super().__init__(10, seed=2)
        self.calls = 0
        self.lock = threading.Lock()

    def forward(self, x):
        with self.lock:
            self.calls += 1
        time.sleep(0.005)
        return super().forward(x)


def test_32_concurrent_clients_get_right_answers_in_shared_batches():
    net = CountingNet()
    host = ModelHost()
    host.register("count", net, kind=ModelKind.CLASSIFICATION, input_size=32)
    net.calls = 0
    clients, per_client = 32, 8
    inputs = torch.rand(clients, per_client, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = TinyNet(10, seed=2)(inputs.flatten(0, 1)).argmax(1).view(clients, per_client)
    errors, answers = [], torch.full((clients, per_client), -1)
    with local_server(host=host, batching=BatchingConfig(max_batch_size=32, max_wait_ms=5)) as (srv, target):
        barrier = threading.Barrier(clients)

        def client(c):
            channel = grpc.insecure_channel(target)
            stub = recognition_pb2_grpc.RecognitionServiceStub(channel)
            barrier.wait()
            for i in range(per_client):
                try:
                    reply = stub.Recognize(pb.RecognizeRequest(
                        model_id="count", input=Input(tensor=wire.torch_to_proto(inputs[c, i])), top_k=1), timeout=30)
                    answers[c, i] = reply.results[0].candidates[0].index
                except grpc.RpcError as exc:  # pragma: no cover - reported below
                    errors.append(exc)
            channel.close()

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stats = srv.batcher.stats
    assert not errors
    assert torch.equal(answers, want)
    total = clients * per_client
    assert stats.requests == total and net.calls == stats.batches
    assert net.calls < total / 3, (net.calls, stats)  # coalesced: far fewer forward passes than requests
    assert stats.max_batch > 4
