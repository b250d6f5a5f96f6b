"""Test-only stand-in for torchaudio.

The registry's torchaudio does not load beside the CPU torch wheel the tests pin, and LLaMA-Factory
imports it at module level only for audio inputs, which these tests never use.
"""


def load(*args, **kwargs):
    raise RuntimeError("torchaudio stub: audio inputs are not available in the neft-plugins test environment")
