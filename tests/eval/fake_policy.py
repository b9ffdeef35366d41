"""A policy for client tests: records every request and answers with actions computed from it, served by the real
PolicyServer over loopback."""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

from starvla_twinbrain.serving.server import PolicyServer


class RecordingPolicy:
    """``actions_from(example) -> [T, D]`` makes the chunk for one request example."""

    def __init__(self, metadata: dict, actions_from: Callable[[dict], np.ndarray]):
        self.metadata = metadata
        self.actions_from = actions_from
        self.requests: list[dict] = []

    def predict_action(self, examples=None, unnorm_key=None, **kwargs) -> dict:
        self.requests.append({"examples": examples, "unnorm_key": unnorm_key, **kwargs})
        return {"actions": np.stack([self.actions_from(ex) for ex in examples]).astype(np.float32)}

    def chat(self, **kwargs) -> dict:
        return {"answer": "fake"}


@contextlib.contextmanager
def served(policy: RecordingPolicy):
    """The bound loopback port of a PolicyServer serving ``policy``."""
    with PolicyServer(policy, host="127.0.0.1", port=0).running() as port:
        yield port
