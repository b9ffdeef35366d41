"""Serving: starVLA's websocket + msgpack policy protocol.

``server`` (the policy server, needs torch) and ``client`` (numpy, websockets and msgpack only, so simulators'
environments can use it) speak the protocol of starVLA's ``deployment/model_server``; ``policy`` wraps a trained
checkpoint: request validation, un-normalisation, the Left Brain's chat.
"""
