"""Where one attachment's noise goes: the token embedding module the plan is read at, the blocks whose inputs get
the noise (none: the embedding module's output gets it), and the names the messages give them."""

from __future__ import annotations

from collections.abc import Container

from torch import nn

from neft_plugins.config import BUILTIN_KEY, NEFTuneConfig, check_no_double_noise
from neft_plugins.engine.structure import (
    base_model,
    check_no_layer_drop,
    encoder_embeddings,
    find_blocks,
    find_decoder,
    find_encoder,
    find_input_embeddings,
    model_config,
    module_path,
    placeholder_token_ids,
)
from neft_plugins.errors import NEFTuneAttachError, NEFTuneConfigError, NEFTuneConflictError


class NoiseSites:
    """Found from the module tree once, at attach; refuses a model NEFTune cannot noise (``taken``: embedding
    modules NEFTune is attached to already)."""

    def __init__(self, model: nn.Module, config: NEFTuneConfig, taken: Container[nn.Module]) -> None:
        self.encoder = find_encoder(model)
        if self.encoder is not None and config.neftune_scope != "all":
            raise NEFTuneConfigError(
                f"neftune_scope: got {config.neftune_scope!r} for an encoder-decoder model; NEFTune noises the "
                "encoder's input, which is all prompt: use neftune_scope: 'all'"
            )
        self.decoder = find_decoder(model)
        # Encoder-decoders: the embedding module the encoder really runs (T5 on transformers 5 runs its own
        # `embed_tokens`, not the `shared` module get_input_embeddings() returns)...
        try:
            self.embeddings, self.embeddings_path = find_input_embeddings(self.encoder or model)
        except NEFTuneAttachError:
            if self.encoder is None:
                raise
            # An encoder that does not name its embeddings (Pegasus, Blenderbot, SeamlessM4T on 4.x; FSMT) runs
            # the model's, or a module that shares their weight.
            self.embeddings, self.embeddings_path = encoder_embeddings(self.encoder, model)
        # ... and the model's own, which a multimodal one (Florence-2) runs before it hands the encoder
        # inputs_embeds: a plan is read from either, outside the decoder's pass.
        watched = [self.embeddings, *([find_input_embeddings(model)[0]] if self.encoder is not None else [])]
        self.watched: list[nn.Module] = list(dict.fromkeys(watched))
        if isinstance(self.embeddings, (nn.ModuleList, nn.ModuleDict)):
            raise NEFTuneAttachError(
                f"{self.embeddings_path} is a {type(self.embeddings).__name__} of several embeddings (one per "
                "codebook), not one token embedding: NEFTune cannot tell which of them carries the text."
            )
        self.placeholder_ids = placeholder_token_ids(model)
        check_no_double_noise(
            {
                "neftune_alpha": config.neftune_alpha,
                BUILTIN_KEY: getattr(self.embeddings, BUILTIN_KEY, None),
            }
        )
        if self.embeddings in taken:
            raise NEFTuneConflictError(
                f"NEFTune is already attached to {self.embeddings_path}; detach it before attaching again"
            )
        stack_root = self.encoder or base_model(model)
        blocks = None if config.neftune_length == "padded" else find_blocks(stack_root, self.embeddings)
        self.blocks: list[nn.Module] = list(blocks) if blocks is not None else []
        self.first_block = self.blocks[0] if self.blocks else None
        if self.first_block is not None:
            check_no_layer_drop(model)
        elif config.neftune_length == "sequence" and model_config(model) is not None:
            raise NEFTuneAttachError(
                f"{type(base_model(model)).__name__}: found no stack of blocks (an nn.ModuleList) that its token "
                f"embeddings {self.embeddings_path} enter, so NEFTune cannot tell where its first block is. Not "
                "supported; report the model to neft-plugins."
            )
        self.block_paths = [module_path(stack_root, block) for block in self.blocks]
        self.noise_site = (
            f"the input of {self.block_paths[0]}" if self.blocks else f"the output of {self.embeddings_path}"
        )

    @property
    def first_site(self) -> str:
        """The first block's path, or the noise site where there is no block."""
        return self.block_paths[0] if self.blocks else self.noise_site
