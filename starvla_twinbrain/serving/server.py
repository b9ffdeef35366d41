"""The policy server: starVLA's websocket + msgpack protocol, hardened.

On connect the server sends the policy's metadata. Then each message is one request, answered in order:

    {"type": "infer" (default) | "predict_action", "request_id"?: str, "payload"?: {...}}  or a flat payload
        payload = {"examples": [{"image": [uint8 HxWx3, ...], "lang": str, "state"?: float [1, D]}, ...],
                   "unnorm_key"?: str, "seed"?: int, ...}  (other keys reach predict_action as kwargs)
        → {"status": "ok", "ok": true, "type": "inference_result", "request_id": ..., "data": {"actions": [B, T, D]}}
    {"type": "ping"}                                     → {"status": "ok", "ok": true, "type": "ping", ...}
    {"type": "chat", "payload": {"image": [...], "question": str, "max_new_tokens"?: int}}
        → {"status": "ok", ..., "data": {"answer": str, "left_precision": str}}   (the Left Brain, the base VLM)

Anything wrong with a request (undecodable bytes, unknown type, missing image, wrong dtype or shape, NaN state, more
examples, images or prompt tokens than the limits) gets ``{"status": "error", "ok": false, "error": {"message":
...}}`` and the connection stays open; unlike starVLA's server, which closes the connection on an exception. Model
calls run one at a time in a worker thread, so the event loop keeps accepting clients while a chunk is computed.

With a ``token``, a client must send ``Authorization: Bearer <token>`` with its connect request (``PolicyClient``
does, from ``token=`` or ``$STARVLA_POLICY_TOKEN``); any other client is closed with code 1008 (policy violation)
and a reason saying so, before it gets the metadata. Without a token, starVLA's own clients connect unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import websockets
import websockets.asyncio.server

from . import msgpack_numpy
from .client import TOKEN_ENV
from .policy import RequestError

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 2**20
REQUEST_TYPES = ("infer", "predict_action", "ping", "chat")
CLOSE_POLICY_VIOLATION = 1008  # RFC 6455: the message (here: the connect request) violates the server's policy


def _error(kind: str, request_id: Any, message: str) -> dict:
    return {"status": "error", "ok": False, "type": kind, "request_id": request_id, "error": {"message": message}}


class PolicyServer:
    """Serves ``policy`` (``predict_action(**payload) -> dict``, ``chat(**payload) -> dict``, ``metadata``)."""

    def __init__(self, policy, host: str = "127.0.0.1", port: int = 10093, idle_timeout: float | None = None,
                 token: str | None = None):
        self.policy, self.host, self.port = policy, host, port
        self.idle_timeout = idle_timeout
        if token is not None and not token:
            raise ValueError(f"token: empty; give a shared secret, or none (unset ${TOKEN_ENV})")
        self._authorization = f"Bearer {token}".encode() if token else None
        self.metadata = policy.metadata
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        self._last_active = time.monotonic()
        self.requests_served = 0

    # ------------------------------------------------------------------ requests
    def answer(self, frame: bytes | str) -> dict:
        """One request frame → its reply. Never raises."""
        if isinstance(frame, str):
            return _error("error", None, "text frame: expected a binary msgpack message")
        try:
            msg = msgpack_numpy.unpackb(frame)
        except ValueError as err:
            return _error("error", None, str(err))
        if not isinstance(msg, dict):
            return _error("error", None, f"message: expected a map, got {type(msg).__name__}")
        request_id = msg.get("request_id", "default")
        kind = msg.get("type", "infer")
        if "payload" in msg:
            payload = msg["payload"]
        else:  # a flat message is its own payload
            payload = {k: v for k, v in msg.items() if k not in ("type", "request_id")}
        if kind not in REQUEST_TYPES:
            return _error("unknown", request_id, f"type: unknown request type {kind!r}; expected one of {list(REQUEST_TYPES)}")
        if kind == "ping":
            return {"status": "ok", "ok": True, "type": "ping", "request_id": request_id}
        reply_type = "chat_result" if kind == "chat" else "inference_result"
        if not isinstance(payload, dict) or not all(isinstance(k, str) for k in payload):
            return _error(reply_type, request_id, f"payload: expected a map with string keys, got {type(payload).__name__}")
        handler = self.policy.chat if kind == "chat" else self.policy.predict_action
        try:
            data = handler(**payload)
        except RequestError as err:
            logger.warning("bad %s request %s: %s", kind, request_id, err)
            return _error(reply_type, request_id, str(err))
        except Exception as err:  # the model failed: report it, keep serving
            logger.exception("%s request %s failed", kind, request_id)
            return _error(reply_type, request_id, f"internal error: {type(err).__name__}: {err}")
        self.requests_served += 1
        return {"status": "ok", "ok": True, "type": reply_type, "request_id": request_id, "data": data}

    async def _handler(self, ws: websockets.asyncio.server.ServerConnection) -> None:
        peer = ws.remote_address
        if self._authorization is not None:
            sent = (ws.request.headers.get("Authorization") or "").encode()
            if not hmac.compare_digest(sent, self._authorization):
                problem = "wrong" if sent else "missing"
                reason = f"{problem} token: send Authorization: Bearer <token> (PolicyClient: token= or ${TOKEN_ENV})"
                logger.warning("client %s refused: %s token", peer, problem)
                await ws.close(CLOSE_POLICY_VIOLATION, reason)
                return
        logger.info("client %s connected", peer)
        loop = asyncio.get_running_loop()
        try:
            await ws.send(msgpack_numpy.packb(self.metadata))
            async for frame in ws:
                self._last_active = time.monotonic()
                reply = await loop.run_in_executor(self._executor, self.answer, frame)
                await ws.send(msgpack_numpy.packb(reply))
        except websockets.ConnectionClosed:
            pass
        logger.info("client %s disconnected", peer)

    # ------------------------------------------------------------------ running
    async def serve(self, on_ready: Callable[[int], None] | None = None, stop: asyncio.Event | None = None) -> None:
        async with websockets.asyncio.server.serve(self._handler, self.host, self.port, compression=None,
                                                   max_size=MAX_MESSAGE_BYTES, ping_interval=None) as server:
            port = server.sockets[0].getsockname()[1]
            logger.info("serving on ws://%s:%d", self.host, port)
            if on_ready:
                on_ready(port)
            stop = stop or asyncio.Event()
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                if self.idle_timeout and time.monotonic() - self._last_active > self.idle_timeout:
                    logger.info("idle for %ss: shutting down", self.idle_timeout)
                    break

    def serve_forever(self) -> None:
        asyncio.run(self.serve())

    @contextlib.contextmanager
    def running(self):
        """Serve from a background thread (tests, notebooks); yields the bound port (``port=0`` picks a free one)."""
        ready, state = threading.Event(), {}

        def run():
            loop = asyncio.new_event_loop()
            state["loop"], state["stop"] = loop, asyncio.Event()
            try:
                loop.run_until_complete(self.serve(lambda p: (state.update(port=p), ready.set()), state["stop"]))
            except BaseException as err:  # surface start-up failures (port in use) to the caller
                state["error"] = err
                ready.set()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="policy-server", daemon=True)
        thread.start()
        ready.wait()
        if "error" in state:
            raise state["error"]
        try:
            yield state["port"]
        finally:
            state["loop"].call_soon_threadsafe(state["stop"].set)
            thread.join(timeout=30)
