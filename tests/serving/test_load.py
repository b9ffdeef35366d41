"""The policy server under load on loopback: 8 clients x 200 requests each get every answer, their own, in order,
with no errors and bounded memory, while another client keeps disconnecting in the middle of requests."""

import threading
import time

import numpy as np
import pytest
import websockets.sync.client

from starvla_twinbrain.serving import msgpack_numpy
from starvla_twinbrain.serving.client import PolicyClient
from starvla_twinbrain.serving.server import PolicyServer

CLIENTS, REQUESTS = 8, 200


class EchoPolicy:
    """Answers each example with a chunk made from its state, so a reply shows which request it belongs to."""
    metadata = {"env": "load-test", "action_chunk_size": 4, "action_dim": 2}

    def predict_action(self, examples=None, **kwargs):
        time.sleep(0.001)  # a little model time, so requests from different clients interleave
        return {"actions": np.stack([np.repeat(np.asarray(ex["state"], np.float32).reshape(1, 2), 4, 0)
                                     for ex in examples])}

    def chat(self, **kwargs):
        return {"answer": ""}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.slow
def test_many_clients_each_get_their_answers_in_order():
    image = np.zeros((32, 32, 3), np.uint8)
    errors, answered, memory = [], [0] * CLIENTS, []
    stop_leaving = threading.Event()

    with PolicyServer(EchoPolicy(), host="127.0.0.1", port=0).running() as port:
        def client(k: int):
            try:
                with PolicyClient("127.0.0.1", port, request_timeout=60) as c:
                    for i in range(REQUESTS):
                        state = np.array([[k, i]], np.float32)
                        chunk = c.predict_action([{"image": [image], "lang": "go", "state": state}])
                        if not np.array_equal(chunk[0], np.repeat(state, 4, 0)):
                            errors.append(f"client {k} request {i}: got an answer for {chunk[0, 0].tolist()}")
                            return
                        answered[k] += 1
                        if k == 0 and i % 50 == 0:
                            memory.append(rss_mb())
            except Exception as err:  # noqa: BLE001 - collected and reported below
                errors.append(f"client {k}: {type(err).__name__}: {err}")

        def leaver():  # sends a request and hangs up without reading the answer, again and again
            while not stop_leaving.is_set():
                with websockets.sync.client.connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
                    ws.recv()
                    ws.send(msgpack_numpy.packb({"examples": [{"image": [image], "lang": "go",
                                                              "state": np.zeros((1, 2), np.float32)}]}))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        leaving = threading.Thread(target=leaver)
        leaving.start()
        [t.start() for t in threads]
        [t.join(timeout=300) for t in threads]
        stop_leaving.set()
        leaving.join(timeout=30)

    assert not errors, errors[:5]
    assert answered == [REQUESTS] * CLIENTS
    assert not any(t.is_alive() for t in threads)
    assert memory[-1] - memory[1] < 50, f"server process memory grew {memory}"
