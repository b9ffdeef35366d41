"""A Python client for the policy server (and for starVLA's): numpy, websockets and msgpack only, so it runs in a
simulator's own environment.

    client = PolicyClient("127.0.0.1", 10093)          # waits for the server; client.metadata arrives on connect
    actions = client.predict_action([{"image": [rgb_uint8], "lang": "lift the red cube", "state": state}])
    client.chat(rgb_uint8, "What is on the table?")     # the Left Brain, the unchanged base VLM

A server started with a token (``starvla serve --token`` or ``$STARVLA_POLICY_TOKEN``) needs the same token here:
``token=`` or the same environment variable.
"""

from __future__ import annotations

import inspect
import os
import time
import uuid

import numpy as np
import websockets.sync.client

from ..normalization import normalize
from . import msgpack_numpy


class PolicyServerError(RuntimeError):
    """The server answered a request with an error."""


TOKEN_ENV = "STARVLA_POLICY_TOKEN"  # the shared token, read by `starvla serve` and by this client


class PolicyClient:
    def __init__(self, host: str = "127.0.0.1", port: int = 10093, connect_timeout: float = 300.0,
                 request_timeout: float | None = 600.0, token: str | None = None):
        self.uri = f"ws://{host}:{port}"
        self.request_timeout = request_timeout
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        # Only with a token: then a plain connect is byte for byte what starVLA's clients send.
        connect_options = {"additional_headers": {"Authorization": f"Bearer {token}"}} if token else {}
        # No keepalive pings, as the server: a simulator holding the GIL (SAPIEN building a scene) cannot answer them
        # in time, and the connection would drop between two requests (websockets >= 14; 13's sync client has none).
        if "ping_interval" in inspect.signature(websockets.sync.client.connect).parameters:
            connect_options["ping_interval"] = None
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self._ws = websockets.sync.client.connect(self.uri, compression=None, max_size=None,
                                                          open_timeout=min(30.0, connect_timeout), **connect_options)
                break
            except (ConnectionRefusedError, OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no policy server at {self.uri} after {connect_timeout:.0f} s") from None
                time.sleep(0.5)
        try:
            self.metadata: dict = msgpack_numpy.unpackb(self._ws.recv(timeout=connect_timeout))
        except websockets.ConnectionClosed as closed:  # e.g. refused for a missing or wrong token
            reason = closed.rcvd.reason if closed.rcvd else "no reason given"
            raise PolicyServerError(f"{self.uri} closed the connection: {reason}") from None

    def request(self, message: dict) -> dict:
        """Send one request, return the raw reply (``status`` ok or error)."""
        self._ws.send(msgpack_numpy.packb(message))
        reply = self._ws.recv(timeout=self.request_timeout)
        if isinstance(reply, str):  # starVLA's server sends a traceback as text before closing
            raise PolicyServerError(f"server error:\n{reply}")
        return msgpack_numpy.unpackb(reply)

    def _data(self, message: dict) -> dict:
        message.setdefault("request_id", uuid.uuid4().hex[:12])
        reply = self.request(message)
        if reply.get("status") != "ok":
            raise PolicyServerError(reply.get("error", {}).get("message", str(reply)))
        return reply.get("data", {})

    def predict_action(self, examples: list[dict], **kwargs) -> np.ndarray:
        """Un-normalised action chunks ``[B, T, action_dim]``. kwargs: ``unnorm_key``, ``seed``, ..."""
        return np.asarray(self._data({"type": "infer", "payload": {"examples": examples, **kwargs}})["actions"])

    def chat(self, image, question: str, max_new_tokens: int = 64) -> str:
        images = image if isinstance(image, (list, tuple)) else [image]
        payload = {"image": list(images), "question": question, "max_new_tokens": max_new_tokens}
        return self._data({"type": "chat", "payload": payload})["answer"]

    def ping(self) -> float:
        """Round-trip time in seconds."""
        start = time.perf_counter()
        self._data({"type": "ping"})
        return time.perf_counter() - start

    def normalize_state(self, state: np.ndarray, unnorm_key: str | None = None) -> np.ndarray:
        """Raw state → the training format the server expects, with the statistics sent in the metadata."""
        stats = self.metadata.get("state_statistics") or {}
        key = unnorm_key or self.metadata.get("default_unnorm_key")
        if key not in stats:
            raise KeyError(f"no state statistics for unnorm_key {key!r} (server has {sorted(stats)})")
        return normalize(np.asarray(state, dtype=np.float32), stats[key], self.metadata.get("normalization", "q99"))

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
