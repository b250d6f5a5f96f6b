"""transformers' own NEFTune (the thing neft-plugins replaces), the same way on every supported version.

Used to take it off a Trainer that turned it on beside ours, and by the demo and benchmarks to compare
against it. Its hook function moved from ``transformers.trainer_utils`` (4.x) to
``transformers.integrations.neftune`` (5.x); what it does, and how the Trainer attaches it, did not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from neft_plugins.config import BUILTIN_KEY
from neft_plugins.engine.structure import find_input_embeddings


def builtin_hook() -> Callable[..., Any]:
    """transformers' ``neftune_post_forward_hook``: noise bound by ``alpha / sqrt(padded_length * d)``."""
    try:
        from transformers.integrations.neftune import neftune_post_forward_hook
    except ImportError:  # transformers < 5
        from transformers.trainer_utils import neftune_post_forward_hook
    return neftune_post_forward_hook


def activate(model: nn.Module, alpha: float) -> RemovableHandle:
    """Turn the built-in on, as ``Trainer(neftune_noise_alpha=alpha)`` does at the start of ``train()``."""
    embeddings, _ = find_input_embeddings(model)
    setattr(embeddings, BUILTIN_KEY, alpha)  # the alpha its hook reads
    return embeddings.register_forward_hook(builtin_hook())


def deactivate(model: nn.Module, hook: RemovableHandle) -> None:
    """Turn it off again, leaving the embeddings as they were."""
    embeddings, _ = find_input_embeddings(model)
    hook.remove()
    if hasattr(embeddings, BUILTIN_KEY):
        delattr(embeddings, BUILTIN_KEY)
