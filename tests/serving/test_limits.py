"""`starvla serve` in its own process, sent requests at and past every input limit: a 100,000-character instruction,
a message-limit's worth of examples, many images per example, a prompt over the token limit. Each gets an error
naming the field, its size and the limit; the server's memory stays bounded and it answers the next request with
the in-process model's numbers. Also loopback by default and the shared token."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import websockets.sync.client

from starvla_twinbrain.config import MAX_EXAMPLES_PER_REQUEST, MAX_IMAGES_PER_EXAMPLE, MAX_PROMPT_TOKENS
from starvla_twinbrain.host.api import STARVLA_AVAILABLE
from starvla_twinbrain.normalization import unnormalize
from starvla_twinbrain.serving import msgpack_numpy
from starvla_twinbrain.serving.client import PolicyClient, PolicyServerError
from starvla_twinbrain.serving.policy import ServedPolicy
from starvla_twinbrain.serving.server import MAX_MESSAGE_BYTES, PolicyServer
from tests.factories import request_examples

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="embedded runtime run")

ROOT = Path(__file__).parents[2]
WORDS = "pick up the red block and put it in the blue bowl next to the green spoon "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and its peak so far (VmHWM), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


@pytest.fixture(scope="module")
def server(trained_run):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1"}
    env.pop("STARVLA_POLICY_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "starvla_twinbrain.cli", "serve", "--ckpt", str(trained_run), "--port",
                             str(port), "--device", "cpu"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        with PolicyClient("127.0.0.1", port, connect_timeout=180) as client:
            client.ping()
        yield proc, port
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
        print(out[-3000:])


@pytest.fixture(scope="module")
def local(trained_run):
    return ServedPolicy.from_checkpoint(trained_run, device="cpu")


def expected_actions(local, examples, seed):
    checked = local.check_examples(examples, local.default_robot_type("toy_robot"))  # as the server fills it in
    normalized = local.model.predict_action(checked, seed=seed)["normalized_actions"]
    return unnormalize(normalized, local.statistics["toy_robot"]["action"], "q99")


def message_limit_batch() -> list[dict]:
    """As many one-image examples as fit in one message under the server's message limit."""
    example = request_examples(1)[0]
    one = len(msgpack_numpy.packb({"examples": [example] * 2})) - len(msgpack_numpy.packb({"examples": [example]}))
    return [example] * ((MAX_MESSAGE_BYTES - 4096) // one)


def oversized_requests() -> dict[str, tuple[dict, str]]:
    ex = request_examples(1)[0]
    many_images = [dict(ex, image=[ex["image"][0]] * 1000) for _ in range(4)]
    return {
        "100,000-character instruction": (
            [dict(ex, lang=(WORDS * 1400)[:100_000])],
            rf"examples\[0\]\.lang: 100000 characters; at most {MAX_PROMPT_TOKENS * 16} "),
        "prompt over the token limit": (
            [dict(ex, lang=WORDS * 200)],  # under the character bound, over the token limit
            rf"examples\[0\]\.lang: the Right Brain's prompt is \d+ tokens .*max_prompt_tokens is {MAX_PROMPT_TOKENS}"),
        "message limit's worth of examples": (
            message_limit_batch(), rf"examples: \d{{5}} examples; at most {MAX_EXAMPLES_PER_REQUEST} per request"),
        "1000 images per example": (
            many_images, rf"examples\[0\]\.image: 1000 images; at most {MAX_IMAGES_PER_EXAMPLE} per example"),
    }


def test_requests_past_the_limits_are_refused_and_the_server_keeps_serving(server, local):
    proc, port = server
    valid = request_examples(2, seed=5)
    want = expected_actions(local, valid, seed=11)
    with PolicyClient("127.0.0.1", port, request_timeout=120) as client:  # the time bound on every answer
        np.testing.assert_allclose(client.predict_action(valid, seed=11), want, rtol=1e-5, atol=1e-5)
        before = memory_mb(proc.pid)
        for name, (examples, pattern) in oversized_requests().items():
            start = time.perf_counter()
            reply = client.request({"type": "infer", "payload": {"examples": examples, "seed": 0}})
            seconds = time.perf_counter() - start
            del examples
            assert reply["status"] == "error", name
            assert __import__("re").search(pattern, reply["error"]["message"]), reply["error"]["message"]
            print(f"{name}: refused in {seconds:.2f} s; server {memory_mb(proc.pid)}")
            np.testing.assert_allclose(client.predict_action(valid, seed=11), want, rtol=1e-5, atol=1e-5)
        after = memory_mb(proc.pid)
    assert proc.poll() is None
    # The message itself (256 MB) is received and decoded once; nothing grows with the instruction or the count.
    assert after["VmHWM"] - before["VmRSS"] < 3 * MAX_MESSAGE_BYTES / 2**20, (before, after)


def test_requests_at_the_limits_are_answered(server, local):
    proc, port = server
    ex = request_examples(1, seed=2)[0]
    edge = [dict(ex, image=[ex["image"][0]] * MAX_IMAGES_PER_EXAMPLE)] * MAX_EXAMPLES_PER_REQUEST
    with PolicyClient("127.0.0.1", port, request_timeout=300) as client:
        got = client.predict_action(edge, seed=3)
    np.testing.assert_allclose(got, expected_actions(local, edge, seed=3), rtol=1e-4, atol=1e-4)


def test_serve_binds_loopback_unless_told(server):
    from starvla_twinbrain.cli import build_parser

    assert build_parser().parse_args(["serve", "--ckpt", "x"]).host == "127.0.0.1"
    _, port = server
    listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    local_addresses = [fields[1] for fields in listening if fields[3] == "0A"]  # state 0A: LISTEN
    assert f"0100007F:{port:04X}" in local_addresses  # 127.0.0.1, little-endian hex
    assert f"00000000:{port:04X}" not in local_addresses  # not 0.0.0.0


class _Echo:
    metadata = {"env": "token-test"}

    def predict_action(self, examples=None, **kwargs):
        return {"actions": np.zeros((len(examples), 1, 1), np.float32)}

    def chat(self, **kwargs):
        return {"answer": ""}


def test_token_is_required_when_set_and_clients_get_a_clear_close_reason(monkeypatch):
    monkeypatch.delenv("STARVLA_POLICY_TOKEN", raising=False)
    with PolicyServer(_Echo(), port=0, token="s3cret").running() as port:
        with pytest.raises(PolicyServerError, match=r"closed the connection: missing token: send Authorization: Bearer"):
            PolicyClient("127.0.0.1", port, connect_timeout=10)
        with pytest.raises(PolicyServerError, match=r"closed the connection: wrong token"):
            PolicyClient("127.0.0.1", port, connect_timeout=10, token="guess")
        with websockets.sync.client.connect(f"ws://127.0.0.1:{port}") as ws:  # starVLA's client: no header
            with pytest.raises(websockets.ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1008 and "missing token" in closed.value.rcvd.reason
        with PolicyClient("127.0.0.1", port, token="s3cret") as client:
            assert client.metadata == {"env": "token-test"} and client.ping() >= 0
        monkeypatch.setenv("STARVLA_POLICY_TOKEN", "s3cret")
        with PolicyClient("127.0.0.1", port) as client:  # from the environment, as the eval clients get it
            assert client.predict_action([{"image": [], "lang": "go"}]).shape == (1, 1, 1)


def test_without_a_token_a_plain_client_connects_as_before(monkeypatch):
    monkeypatch.delenv("STARVLA_POLICY_TOKEN", raising=False)
    with PolicyServer(_Echo(), port=0).running() as port:
        with websockets.sync.client.connect(f"ws://127.0.0.1:{port}") as ws:  # as starVLA's clients connect
            assert msgpack_numpy.unpackb(ws.recv(timeout=10)) == {"env": "token-test"}
        monkeypatch.setenv("STARVLA_POLICY_TOKEN", "unused")  # a client token the server does not ask for is fine
        with PolicyClient("127.0.0.1", port) as client:
            assert client.ping() >= 0
