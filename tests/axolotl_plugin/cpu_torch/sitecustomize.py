"""Loaded at start-up by every Python process of the Axolotl 0.17.0 test session (it is on PYTHONPATH there).

Axolotl 0.17.0's config loader probes the GPU with ``torch.cuda.get_device_capability()`` and catches only
``RuntimeError`` (what a CUDA build of torch raises without a device). The CPU build of torch that the tests
run on raises ``AssertionError`` ("Torch not compiled with CUDA enabled") instead, so every ``axolotl train``
would stop there. Here the CPU build answers as a CUDA build without a GPU does; Axolotl 0.19 catches both.
Nothing else changes, and no other session loads this.
"""

import torch

_device_capability = torch.cuda.get_device_capability


def _capability_or_no_device(device=None):
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device")
    return _device_capability(device)


torch.cuda.get_device_capability = _capability_or_no_device
