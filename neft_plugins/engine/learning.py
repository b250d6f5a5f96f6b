"""Learning, once, which block inputs carry the embeddings: on the probe pass at attach (``probe``), else on the
first noised training pass, by comparing every tensor input of every block with the clean embeddings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from neft_plugins.engine.block_inputs import InputKey, hidden_key, input_name, tensor_inputs
from neft_plugins.engine.carriers import ONE_COPY, Copies, copies_in_first_input, copies_of
from neft_plugins.engine.layout import Layout
from neft_plugins.engine.plan import NoisePlan
from neft_plugins.engine.probe import probe_inputs
from neft_plugins.engine.sites import NoiseSites
from neft_plugins.errors import NEFTuneInputError

logger = logging.getLogger("neft_plugins")

Carriers = tuple[tuple[InputKey, Copies], ...]


@dataclass
class Learning:
    """The first noised pass, while it learns which block inputs carry the embeddings: the clean embeddings as
    the first block received them, and the carriers found so far, per block."""

    embeddings: torch.Tensor
    carriers: dict[int, Carriers] = field(default_factory=dict)


class CarrierLearning:
    """How the first block's input holds the embeddings (``first_copies``) and which inputs of which blocks carry
    them (``carriers``): None until learnt."""

    def __init__(self, sites: NoiseSites, layout: Layout) -> None:
        self.sites, self.layout = sites, layout
        self.first_copies: Copies | None = None
        self.carriers: dict[int, Carriers] | None = None
        self.current: Learning | None = None  # the pass learning them now
        self.probing = False  # the probe pass is running

    def probe(self, model: nn.Module, after: Callable[[], None]) -> None:
        """Learn where the embeddings reach the blocks now, by one probe pass (``neft_plugins.engine.probe``), so
        that no training pass has to learn it (a pass compiled after ``attach`` could not). Where the model cannot
        run the probe batch, or refuses it, its first training pass learns it as before, and refuses there.
        ``after``: resets the call state the probe pass left."""
        sites = self.sites
        inputs = probe_inputs(model, sites.embeddings, sites.encoder is not None, sites.placeholder_ids)
        if inputs is None:
            return
        modes = {module: module.training for module in model.modules()}
        self.probing = True
        try:
            with torch.no_grad():
                model.eval()(**inputs)
        except Exception as error:  # the first training pass learns instead, and refuses there if it must
            self.first_copies, self.carriers, self.current = None, None, None
            logger.warning(
                "neft_plugins: %s did not run a probe batch of text (%s: %s), so NEFTune learns where its "
                "embeddings reach the blocks on the first training pass, which must run eagerly: torch.compile "
                "the model after one training step, or attach to the torch.compile'd module.",
                type(model).__name__,
                type(error).__name__,
                error,
            )
        finally:
            self.probing = False
            for module, training in modes.items():
                module.training = training
            after()

    def start(self, embeddings: torch.Tensor, plan: NoisePlan) -> None:
        """Learn on this pass if it noises something: with no noise, a block that passes its input through
        unchanged (zero-initialised) would look like one that is handed the clean embeddings again."""
        if self.carriers is None and not torch.compiler.is_compiling() and bool(plan.noised.any()):
            self.current = Learning(embeddings.detach().clone())

    def copies_in_first_input(self, hidden: torch.Tensor, plan: NoisePlan) -> Copies:
        if self.first_copies is None:
            self.refuse_while_compiling()
            rows, length = plan.segments.shape
            try:
                self.first_copies = copies_in_first_input(hidden, {(rows, length), (length, rows)})
            except NEFTuneInputError as error:
                raise NEFTuneInputError(f"{self.sites.block_paths[0]} received {error}") from None
        if not self.first_copies.fits(hidden):
            self.layout.refuse(hidden, plan)
        return self.first_copies

    def carriers_in(self, index: int, args: tuple, kwargs: dict) -> Carriers:
        """The inputs of block ``index`` that carry the embeddings: learnt, or being learnt on this pass."""
        if self.carriers is not None:
            return self.carriers.get(index, ())
        self.refuse_while_compiling()
        first = hidden_key(args, kwargs) if index == 0 else None
        learning = self.current
        found: list[tuple[InputKey, Copies]] = []
        for key, value in tensor_inputs(args, kwargs):
            copies = (
                self.first_copies
                if key == first
                else copies_of(value, learning.embeddings)
                if learning is not None
                else None
            )
            if copies is not None:
                found.append((key, copies))
        if learning is not None and found:
            learning.carriers[index] = tuple(found)
        return tuple(found)

    def finish(self) -> dict[int, Carriers]:
        """Keep the carriers found on this pass (said when there are more than the first block's hidden states)."""
        learning, self.current = self.current, None
        assert learning is not None
        self.carriers = carriers = learning.carriers
        found = [
            f"{self.sites.block_paths[index]} {input_name(key)} ({copies.describe()})"
            for index, each in sorted(carriers.items())
            for key, copies in each
        ]
        if len(found) > 1 or self.first_copies != ONE_COPY:
            logger.warning(
                "neft_plugins: the embeddings reach the blocks through %s: each gets the same noise, "
                "alpha/sqrt(L*%d) per sequence",
                "; ".join(found),
                learning.embeddings.shape[-1],
            )
        return carriers

    def refuse_while_compiling(self) -> None:
        if torch.compiler.is_compiling():
            raise NEFTuneInputError(
                f"NEFTune learns which inputs of {type(self.sites.blocks[0]).__name__} and the blocks after it "
                "carry the embeddings on its first noised training pass, and that pass is being compiled. Attach "
                "to the torch.compile'd module (its first passes then run eagerly), or run one training step "
                "before compiling."
            )
