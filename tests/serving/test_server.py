"""The policy server over loopback: numbers equal to the in-process model, bad requests answered with errors on a
connection that keeps working, concurrent clients, the Left Brain's chat."""

import threading

import numpy as np
import pytest
import websockets.sync.client

from starvla_twinbrain.host.api import STARVLA_AVAILABLE
from starvla_twinbrain.normalization import normalize, unnormalize
from starvla_twinbrain.serving import msgpack_numpy
from starvla_twinbrain.serving.client import PolicyClient, PolicyServerError
from starvla_twinbrain.serving.policy import ServedPolicy
from starvla_twinbrain.serving.server import PolicyServer
from tests.factories import DIM, HORIZON, learnable_examples, request_examples

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="embedded runtime run")


@pytest.fixture(scope="module")
def run(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def policy(run):
    return ServedPolicy.from_checkpoint(run, device="cpu")


@pytest.fixture(scope="module")
def port(policy):
    with PolicyServer(policy, host="127.0.0.1", port=0).running() as bound:
        yield bound


def test_metadata_on_connect(port, policy):
    with PolicyClient("127.0.0.1", port) as client:
        meta = client.metadata
    assert meta["action_chunk_size"] == HORIZON and meta["action_dim"] == DIM and meta["state_dim"] == DIM
    assert meta["available_unnorm_keys"] == ["toy_robot"] and meta["default_unnorm_key"] == "toy_robot"
    assert meta["framework"] == "TwinBrain" and meta["device"] == "cpu"
    assert meta["training_obs_image_size"] == [64, 64]
    assert meta["state_statistics"]["toy_robot"] == policy.statistics["toy_robot"]["state"]


@pytest.mark.slow
def test_compiled_head_serves_the_same_actions(run, policy):
    """`starvla serve --compile-head`: the head's DiT through torch.compile, the eager server's actions."""
    compiled = ServedPolicy.from_checkpoint(run, device="cpu", compile_head=True)
    assert compiled.metadata["compiled_head"] and not policy.metadata["compiled_head"]
    examples = request_examples(2)
    with PolicyServer(compiled, host="127.0.0.1", port=0).running() as bound:
        with PolicyClient("127.0.0.1", bound) as client:
            served = client.predict_action(examples, seed=7)
    local = policy.model.predict_action(policy.check_examples(examples, "toy_robot"), seed=7)["normalized_actions"]
    want = unnormalize(local, policy.statistics["toy_robot"]["action"], "q99")
    np.testing.assert_allclose(served, want, rtol=1e-4, atol=1e-4)


def test_round_trip_equals_the_model_in_process(port, policy):
    examples = request_examples(3)
    with PolicyClient("127.0.0.1", port) as client:
        served = client.predict_action(examples, seed=7)
        again = client.predict_action(examples, seed=7)
    local = policy.model.predict_action(policy.check_examples(examples, "toy_robot"), seed=7)["normalized_actions"]
    want = unnormalize(local, policy.statistics["toy_robot"]["action"], "q99")
    assert served.shape == (3, HORIZON, DIM) and served.dtype == np.float32
    np.testing.assert_array_equal(served, want)
    np.testing.assert_array_equal(served, again)
    assert not np.allclose(want, local)  # un-normalisation did something


def test_robot_type_defaults_to_the_training_datas_and_a_request_may_name_it(policy):
    """starVLA keys its statistics by the robot tag training read; the embedded runtime records the dataset's robot
    type beside its statistics. An example may name its own."""
    examples = request_examples(1)
    assert policy.default_robot_type("toy_robot") == "toy_robot"  # no recorded robot_type: starVLA's tag
    assert policy.check_examples(examples, "toy_robot")[0]["robot_type"] == "toy_robot"
    assert policy.check_examples([dict(examples[0], robot_type="widowx")], "toy_robot")[0]["robot_type"] == "widowx"
    recorded = dict(policy.statistics["toy_robot"], robot_type="panda")
    stats, policy.statistics = policy.statistics, {"toy_robot": recorded}
    try:
        assert policy.default_robot_type("toy_robot") == "panda"
        served = policy.predict_action(examples, seed=7)["actions"]
        local = policy.model.predict_action([dict(policy.check_examples(examples)[0], robot_type="panda")],
                                            seed=7)["normalized_actions"]
        np.testing.assert_array_equal(served, unnormalize(local, recorded["action"], "q99"))
    finally:
        policy.statistics = stats


def test_starvla_style_flat_request_and_ping(port):
    """starVLA's clients send the payload at top level; the reply layout is starVLA's."""
    with PolicyClient("127.0.0.1", port) as client:
        reply = client.request({"examples": request_examples(1), "unnorm_key": "toy_robot", "use_ddim": True})
        assert reply["status"] == "ok" and reply["type"] == "inference_result"
        assert reply["data"]["actions"].shape == (1, HORIZON, DIM)
        assert client.request({"type": "ping", "request_id": "p1"}) == {"status": "ok", "ok": True, "type": "ping",
                                                                         "request_id": "p1"}


def _bad(examples_edit):
    ex = request_examples(1)[0]
    examples_edit(ex)
    return {"type": "infer", "payload": {"examples": [ex]}}


BAD_REQUESTS = {
    "missing image": (_bad(lambda ex: ex.pop("image")), r"examples\[0\]\.image: missing"),
    "float image": (_bad(lambda ex: ex.update(image=[ex["image"][0].astype(np.float32)])), r"examples\[0\]\.image\[0\]: expected a uint8"),
    "grey image": (_bad(lambda ex: ex.update(image=[ex["image"][0][..., 0]])), r"examples\[0\]\.image\[0\]: expected a uint8 array \[H, W, 3\]"),
    "huge image": (_bad(lambda ex: ex.update(image=[np.zeros((5000, 8, 3), np.uint8)])), r"image of 5000x8"),
    "state shape": (_bad(lambda ex: ex.update(state=np.zeros((1, DIM + 1), np.float32))), r"examples\[0\]\['state'\]: expected shape \[7\] or \[1, 7\]"),
    "state dtype": (_bad(lambda ex: ex.update(state=np.zeros((1, DIM), np.int64))), r"examples\[0\]\['state'\]: expected a float array"),
    "NaN state": (_bad(lambda ex: ex["state"].__setitem__((0, 2), np.nan)), r"examples\[0\]\['state'\]: contains NaN or inf"),
    "missing state": (_bad(lambda ex: ex.pop("state")), r"examples\[0\] have no 'state'"),
    "empty lang": (_bad(lambda ex: ex.update(lang="  ")), r"examples\[0\]\.lang: expected a non-empty"),
    "no examples": ({"type": "infer", "payload": {"examples": []}}, r"examples: expected a non-empty list"),
    "unknown unnorm_key": ({"type": "infer", "payload": {"examples": request_examples(1), "unnorm_key": "bridge"}}, r"unnorm_key: 'bridge' is not one of"),
    "unknown type": ({"type": "reset"}, r"type: unknown request type 'reset'"),
    "payload not a map": ({"type": "infer", "payload": [1, 2]}, r"payload: expected a map"),
    "chat without question": ({"type": "chat", "payload": {"image": [np.zeros((8, 8, 3), np.uint8)]}}, r"question: expected a non-empty string"),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_request_gets_an_error_and_the_connection_keeps_serving(port, name):
    message, pattern = BAD_REQUESTS[name]
    with PolicyClient("127.0.0.1", port) as client:
        reply = client.request(message)
        assert reply["status"] == "error" and reply["ok"] is False
        assert __import__("re").search(pattern, reply["error"]["message"]), reply["error"]["message"]
        assert client.predict_action(request_examples(1), seed=0).shape == (1, HORIZON, DIM)


@pytest.mark.parametrize("frame", [b"\xc1\xc1garbage", b"", "a text frame", msgpack_numpy.packb([1, 2, 3])])
def test_undecodable_frames_get_an_error(port, frame):
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
        ws.recv()  # metadata
        ws.send(frame)
        reply = msgpack_numpy.unpackb(ws.recv(timeout=30))
        assert reply["status"] == "error" and reply["error"]["message"]
        ws.send(msgpack_numpy.packb({"type": "ping"}))
        assert msgpack_numpy.unpackb(ws.recv(timeout=30))["status"] == "ok"


def test_concurrent_clients_get_their_own_answers_in_order(port):
    examples = request_examples(4)
    with PolicyClient("127.0.0.1", port) as client:
        want = {seed: client.predict_action([examples[seed % 4]], seed=seed) for seed in range(8)}
    got, errors = {}, []

    def worker(k: int):
        try:
            with PolicyClient("127.0.0.1", port) as client:
                for seed in (k, k + 4, k):
                    got.setdefault(k, []).append((seed, client.predict_action([examples[seed % 4]], seed=seed)))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert not errors, errors
    for k in range(4):
        assert [s for s, _ in got[k]] == [k, k + 4, k]
        for seed, actions in got[k]:
            np.testing.assert_array_equal(actions, want[seed])


def test_client_that_leaves_mid_request_does_not_disturb_others(port):
    with PolicyClient("127.0.0.1", port) as steady:
        for _ in range(3):
            leaver = websockets.sync.client.connect(f"ws://127.0.0.1:{port}", max_size=None)
            leaver.recv()
            leaver.send(msgpack_numpy.packb({"examples": request_examples(2)}))
            leaver.close()
            assert steady.predict_action(request_examples(1), seed=1).shape == (1, HORIZON, DIM)


def test_chat_is_the_left_brain(port, policy):
    image = np.asarray(learnable_examples(1)[0]["image"][0])
    with PolicyClient("127.0.0.1", port) as client:
        answer = client.chat(image, "What colour is the square?", max_new_tokens=6)
    assert isinstance(answer, str)
    assert answer == policy.model.backbone.chat([image], "What colour is the square?", max_new_tokens=6)


def test_client_error_and_state_normalisation(port, policy):
    with PolicyClient("127.0.0.1", port) as client:
        with pytest.raises(PolicyServerError, match="examples: expected a non-empty list"):
            client.predict_action([])
        raw = np.array([[0.5, -0.3, 0.1, 0.0, 0.2, 0.9, -0.9]], np.float32)
        np.testing.assert_array_equal(client.normalize_state(raw), normalize(raw, policy.statistics["toy_robot"]["state"]))


def test_server_reports_a_port_in_use(policy, port):
    with pytest.raises(OSError):
        with PolicyServer(policy, host="127.0.0.1", port=port).running():
            pass


def test_seeded_actions_are_reproducible_and_batch_independent(policy):
    """An example's seeded actions are the same alone, first or last in a batch, with neighbours of other sizes."""
    examples = request_examples(4)
    examples[2]["image"] = [np.zeros((40, 90, 3), np.uint8)]  # a different image size: different token count
    examples[3]["lang"] = "a much longer instruction than the others, so its prompt has many more tokens"
    alone = policy.predict_action([examples[0]], seed=3)["actions"]
    np.testing.assert_array_equal(alone, policy.predict_action([examples[0]], seed=3)["actions"])
    first = policy.predict_action(examples, seed=3)["actions"][0]
    last = policy.predict_action(examples[::-1], seed=3)["actions"][-1]
    np.testing.assert_allclose(first, alone[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last, alone[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(policy.predict_action([examples[0]], seed=4)["actions"], alone)


def test_serving_on_cpu_is_fp32_where_weights_are_read_in_bf16(run, monkeypatch):
    """`starvla serve --device cpu` on a GPU machine (where checkpoints are read in bf16): fp32, as on any CPU."""
    import torch

    from starvla_twinbrain.framework import twinbrain

    monkeypatch.setattr(twinbrain, "_load_dtype", lambda: torch.bfloat16)
    served = ServedPolicy.from_checkpoint(run, device="cpu")
    assert {p.dtype for p in served.model.parameters()} == {torch.float32}
    assert served.metadata["dtype"] == "float32"


@pytest.mark.parametrize("size, want", [(None, (224, 224)), ([48, 64], (48, 64))])
def test_requests_are_resized_to_the_training_image_size(policy, size, want):
    """A starVLA-trained run has no obs_image_size in its config: its loader resized to 224, so does the server.
    A size is (height, width) in both the config and the metadata."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(policy.config))
    del cfg.datasets.vla_data["obs_image_size"]
    if size is not None:
        cfg.datasets.vla_data.obs_image_size = size
    served = ServedPolicy(policy.model, cfg, policy.statistics)
    assert served.metadata["training_obs_image_size"] == list(want)
    example = request_examples(1)[0]
    example["image"] = [np.zeros((100, 150, 3), np.uint8)]
    assert served.check_examples([example])[0]["image"][0].size == (want[1], want[0])
