"""Bad input, everywhere a user or a client can give it: one clear error naming the field and what was expected.
The server's request checks are in tests/serving; here the config loader, the framework, the protocol decoder and
the normalisation, with property-based tests (hypothesis) where the input space is large."""

from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from starvla_twinbrain.config import TwinBrainConfig
from starvla_twinbrain.model.action_head import ActionHeadConfig
from starvla_twinbrain.normalization import normalize, unnormalize
from starvla_twinbrain.serving import msgpack_numpy
from starvla_twinbrain.serving.policy import RequestError, ServedPolicy
from starvla_twinbrain.serving.server import PolicyServer

TINY = Path(__file__).parents[1] / "configs" / "tiny_cpu.yaml"


def head_config(cfg) -> ActionHeadConfig:
    return TwinBrainConfig.from_omegaconf(cfg).head_config(cross_attention_dim=64)


CONFIG_ERRORS = {
    "no base_vlm": ("framework.qwenvl.base_vlm", None, r"framework\.qwenvl\.base_vlm is missing"),
    "empty base_vlm": ("framework.qwenvl.base_vlm", "", r"framework\.qwenvl\.base_vlm='': expected the path"),
    "no action_dim": ("framework.action_model.action_dim", None, r"framework\.action_model\.action_dim is missing"),
    "include_state text": ("datasets.vla_data.include_state", "yes", r"datasets\.vla_data\.include_state='yes': expected true or false"),
    "state without state_dim": ("framework.action_model.state_dim", None, r"include_state is true but framework\.action_model\.state_dim is not set"),
    "unknown condition": ("framework.twinbrain.condition", "last_token", r"framework\.twinbrain\.condition='last_token': expected one of"),
    "misspelt option": ("framework.twinbrain.num_state_token", 2, r"framework\.twinbrain\.num_state_token is not a TwinBrain option"),
    "option of wrong type": ("framework.twinbrain.num_state_tokens", "two", r"framework\.twinbrain\.num_state_tokens='two': expected an integer"),
    "zero horizon": ("framework.action_model.action_horizon", 0, r"framework\.action_model\.action_horizon=0: expected a positive integer"),
    "text action_dim": ("framework.action_model.action_dim", "seven", r"framework\.action_model\.action_dim='seven': expected a positive integer"),
    "unknown DiT size": ("framework.action_model.action_model_type", "DiT-XL", r"framework\.action_model\.action_model_type='DiT-XL': expected one of"),
    "horizon past max_seq_len": ("framework.action_model.action_horizon", 5000, r"action_horizon=5000 exceeds max_seq_len"),
}


@pytest.mark.parametrize("name", sorted(CONFIG_ERRORS))
def test_config_errors_name_the_key(name):
    key, value, pattern = CONFIG_ERRORS[name]
    cfg = OmegaConf.load(TINY)
    parent, leaf = key.rsplit(".", 1)
    if value is None:
        OmegaConf.select(cfg, parent).pop(leaf)
    else:
        OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ValueError, match=pattern):
        head_config(cfg)


def test_unknown_attention_backend_names_the_key():
    from starvla_twinbrain.config import BackboneConfig

    with pytest.raises(ValueError, match=r"attn_implementation='flash3': expected one of"):
        BackboneConfig(base_vlm="x/Qwen2.5-VL", attn_implementation="flash3")


# ---------------------------------------------------------------------- protocol and normalisation, by property

json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(st.binary(max_size=256))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_or_fail_with_a_value_error(data):
    try:
        msgpack_numpy.unpackb(data)
    except ValueError as err:
        assert "undecodable message" in str(err)


class _NoModel:
    """The server's routing without a model: every infer request is checked, then refused."""
    metadata = {"env": "test"}

    def predict_action(self, examples=None, **kwargs):
        raise RequestError("examples: checked")

    def chat(self, **kwargs):
        raise RequestError("chat: checked")


@given(st.one_of(json_like, st.dictionaries(st.sampled_from(["type", "payload", "request_id", "examples"]), json_like)))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_server_answers_any_message_with_a_status(message):
    reply = PolicyServer(_NoModel(), port=0).answer(msgpack.packb(message))
    assert reply["status"] in ("ok", "error")
    if reply["status"] == "error":
        assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    msgpack_numpy.packb(reply)  # and the reply can always be sent


finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@given(st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=8), st.sampled_from(["q99", "min_max"]))
def test_normalize_maps_into_unit_range_and_round_trips(rows, mode):
    x = np.asarray(rows, dtype=np.float32)
    low, high = x.min(0), x.max(0)
    stats = {"q01": low.tolist(), "q99": high.tolist(), "min": low.tolist(), "max": high.tolist()}
    y = normalize(x, stats, mode)
    moving = high > low
    assert np.all(np.abs(y[:, moving]) <= 1)
    np.testing.assert_array_equal(y[:, ~moving], x[:, ~moving])  # constant dims pass through
    np.testing.assert_allclose(unnormalize(y, stats, mode), x, rtol=1e-4, atol=1e-4 * (1 + np.abs(x).max()))


# ---------------------------------------------------------------------- request checks, by property


class _Policy(ServedPolicy):
    def __init__(self):  # only the checks: no model
        self.include_state, self.state_dim, self.image_size = True, 3, (8, 8)
        self.max_batch, self.max_images = 4, 2


image = st.builds(lambda h, w, c, dt: np.zeros((h, w, c), dtype=dt), st.integers(0, 5), st.integers(0, 5),
                  st.integers(1, 4), st.sampled_from([np.uint8, np.float32, np.int16]))
# the size dimension: up to twice the limits of _Policy (4 examples, 2 images each)
images = st.one_of(st.none(), st.integers(), st.text(max_size=5), image, st.lists(image, max_size=4))
states = st.one_of(
    st.none(), st.text(max_size=4),
    st.builds(lambda n, v, dt: np.full((1, n), v, dtype=dt), st.integers(0, 5),
              st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([np.float32, np.float64, np.int64])),
)


@given(st.lists(st.fixed_dictionaries({}, optional={"image": images, "lang": st.one_of(st.none(), st.text(max_size=6)),
                                                   "state": states}), max_size=8))
@settings(max_examples=300, deadline=None)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # building int arrays from NaN while generating inputs
def test_request_checks_accept_or_name_the_field(examples):
    try:
        checked = ServedPolicy.check_examples(_Policy(), examples)
    except RequestError as err:
        assert str(err).split(":")[0].startswith("examples"), err
        return
    assert len(checked) <= 4  # what passes is exactly what the model can take
    for item in checked:
        assert item["lang"].strip() and 1 <= len(item["image"]) <= 2 and item["image"][0].size == (8, 8)
        assert item["state"].shape == (1, 3) and np.isfinite(item["state"]).all()


# ---------------------------------------------------------------------- prompt size, by property

PROMPT_LIMIT = 200


@pytest.fixture(scope="module")
def prompt_builder(tiny_vlm):
    from starvla_twinbrain.config import PromptConfig
    from starvla_twinbrain.model.processing import load_processor
    from starvla_twinbrain.model.prompts import PromptBuilder

    return PromptBuilder(load_processor(tiny_vlm), PromptConfig(), max_prompt_tokens=PROMPT_LIMIT, max_images=2)


sizes = st.one_of(st.integers(0, 60), st.integers(60, 400), st.integers(400, 40_000))  # in repetitions of a piece


@given(st.text(min_size=1, max_size=12).filter(str.strip), sizes, st.integers(1, 3), st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_instruction_size_fits_or_is_refused_naming_its_size(prompt_builder, piece, repeat, num_images, truncate):
    from starvla_twinbrain.model.prompts import InputTooLarge

    instruction = (piece * repeat).strip() or piece
    image = np.zeros((28, 28, 3), np.uint8)
    try:
        left, right = prompt_builder([[image] * num_images], [instruction], truncate=truncate)
    except InputTooLarge as err:
        message = str(err)  # whichever limit was checked first, named with its numbers
        if message.startswith("examples[0].image: 3 images"):
            assert num_images == 3 and message.endswith("at most 2 per example (max_images_per_example)")  # the builder's argument
        elif message.startswith(f"examples[0].lang: {len(instruction)} characters; at most {PROMPT_LIMIT * 16} "):
            assert not truncate and len(instruction) > PROMPT_LIMIT * 16
        elif message.startswith("examples[0].lang: the "):
            assert not truncate and int(message.split("prompt is ")[1].split()[0]) > PROMPT_LIMIT, message
            assert message.endswith(f"max_prompt_tokens is {PROMPT_LIMIT}"), message
        else:  # truncation gives up only when the images alone leave no room
            assert truncate and message.startswith("examples[0].image: ") and "images make the prompt longer" in message
        return
    assert num_images <= 2
    assert max(left.attention_mask.sum(), right.attention_mask.sum()) <= PROMPT_LIMIT


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from starvla_twinbrain.cli import main

    assert main(["serve", "--ckpt", str(tmp_path / "run" / "final_model" / "pytorch_model.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("starvla serve: error: ") and "config.yaml not found" in err and "\n" not in err
