"""The embedded host, used where starVLA is not installed: trainer, LeRobot data, checkpoints.

The only part of the package that imports accelerate and lerobot.
"""
