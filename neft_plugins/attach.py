"""Attaching NEFTune to a model: the hooks that connect a model to the plan reader (at the token embeddings) and
to the carriers of the embeddings (the inputs of its blocks), and the handle that removes them."""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neft_plugins.calls import CallTracker
from neft_plugins.carriers import ONE_COPY, Copies, copies_in_first_input, copies_of
from neft_plugins.config import BUILTIN_KEY, NEFTuneConfig, as_config, check_no_double_noise
from neft_plugins.draw import NoiseSource
from neft_plugins.errors import (
    NEFTuneAttachError,
    NEFTuneConfigError,
    NEFTuneConflictError,
    NEFTuneInputError,
)
from neft_plugins.plan import NoisePlan, PlanReader
from neft_plugins.plugins import plugin_manager, schedules
from neft_plugins.probe import probe_inputs
from neft_plugins.stream import Replays, may_recompute
from neft_plugins.structure import (
    base_model,
    check_no_layer_drop,
    compiled_wrapper,
    encoder_embeddings,
    find_blocks,
    find_decoder,
    find_encoder,
    find_input_embeddings,
    model_config,
    module_path,
    placeholder_token_ids,
    unwrap_model,
)

logger = logging.getLogger("neft_plugins")

_attached: weakref.WeakKeyDictionary[nn.Module, NEFTuneHandle] = weakref.WeakKeyDictionary()

InputKey = int | str  # a block input: its position among the arguments, or its keyword
Carriers = tuple[tuple[InputKey, Copies], ...]


@dataclass
class Learning:
    """The first noised pass, while it learns which block inputs carry the embeddings: the clean embeddings as
    the first block received them, and the carriers found so far, per block."""

    embeddings: torch.Tensor
    carriers: dict[int, Carriers] = field(default_factory=dict)


class NEFTuneHandle:
    """One attachment of NEFTune to one model. ``detach()`` removes every trace of it.

    On a training pass the embedding hook reads the batch into a plan (``PlanReader``); the first block's
    pre-hook draws, for the embeddings as that block receives them, ``alpha / sqrt(L_s * d)`` noise per sequence;
    every block input that carries the embeddings (learnt on the first noised pass: ``carriers``) gets that same
    noise, in every copy. ``neftune_length: padded`` (transformers' built-in, placement included) and a model with
    no stack of blocks get it at the embedding module's output instead.
    """

    def __init__(
        self,
        model: nn.Module,
        config: NEFTuneConfig,
        sequence_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        self.config = config
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
        if self.embeddings in _attached:
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
        self._plugins = plugin_manager()
        self.noise = NoiseSource(self, config, self._plugins)
        self._noising = self.alpha > 0  # a bool, not alpha: a compiled graph guards on it, and alpha changes
        self._schedule = schedules()[config.neftune_schedule]
        self.reader = PlanReader(
            self._plugins.hook.neft_read_segments,
            config.neftune_scope,
            config.neftune_length == "padded",
            self.placeholder_ids,
            # An encoder-decoder's labels are the decoder's: they say nothing about the encoder's positions.
            labels_are_inputs=self.encoder is None,
            sequence_group=sequence_group,
        )
        self.calls = CallTracker(
            unwrap_model(model),
            self.encoder,
            self.decoder,
            self.embeddings_path,
            self._start_call,
            self._end_call,
        )
        # Learnt on the first noised training pass: how the first block's input holds the embeddings, and which
        # inputs of which blocks carry them.
        self.first_copies: Copies | None = None
        self.carriers: dict[int, Carriers] | None = None
        self._learning: Learning | None = None
        # The model call in progress: its plan (read, not yet applied), its noise, the blocks that got it.
        self._plan: NoisePlan | None = None
        self._noise: torch.Tensor | None = None
        self._noised_blocks: set[int] = set()
        self._replays: dict[tuple[int, InputKey], Replays] = {}
        self._eager_stance: Any = None
        self._runs_at_last_read = 0
        self._ids_transposed = (
            False  # learnt from each batch's ids, kept for a compiled graph's square batches
        )
        self._block_transposed = False  # learnt from the first non-square batch
        self._warned_nothing_noised = False
        self._step_set = False  # a decaying schedule needs set_step(); a hand-written loop may not call it
        self._warned_no_step = False
        self._eval_mode_pass = False  # the call in progress ran the embeddings in eval mode with autograd on
        self._warned_eval_mode = False
        self._hooks = [
            *self.calls.register(model),
            *(module.register_forward_hook(self._embedding_hook) for module in dict.fromkeys(watched)),
        ]
        self._block_hooks = {
            index: block.register_forward_pre_hook(self._block_hook_at(index), with_kwargs=True)
            for index, block in enumerate(self.blocks)
        }
        wrapper = compiled_wrapper(model)
        if wrapper is not None and self.blocks:
            # Its hooks run outside the compiled code: the passes until the carriers are learnt run eagerly.
            self._hooks += [
                wrapper.register_forward_pre_hook(self._eager_until_learnt),
                wrapper.register_forward_hook(self._end_eager, always_call=True),
            ]
        _attached[self.embeddings] = self
        settings = ", ".join(
            f"{key.removeprefix('neftune_')}={value}" for key, value in config.as_dict().items()
        )
        logger.warning("neft_plugins: attached NEFTune at %s (%s)", self.noise_site, settings)
        self._probing = False
        if self.blocks and self._noising and wrapper is None:
            self._probe(model)

    def _probe(self, model: nn.Module) -> None:
        """Learn where the embeddings reach the blocks now, by one probe pass (``neft_plugins.probe``), so that
        no training pass has to learn it (a pass compiled after ``attach`` could not). Where the model cannot run
        the probe batch, or refuses it, its first training pass learns it as before, and refuses there."""
        inputs = probe_inputs(model, self.embeddings, self.encoder is not None, self.placeholder_ids)
        if inputs is None:
            return
        modes = {module: module.training for module in model.modules()}
        self._probing = True
        try:
            with torch.no_grad():
                model.eval()(**inputs)
        except Exception as error:  # the first training pass learns instead, and refuses there if it must
            self.first_copies, self.carriers, self._learning = None, None, None
            logger.warning(
                "neft_plugins: %s did not run a probe batch of text (%s: %s), so NEFTune learns where its "
                "embeddings reach the blocks on the first training pass, which must run eagerly: torch.compile "
                "the model after one training step, or attach to the torch.compile'd module.",
                type(model).__name__,
                type(error).__name__,
                error,
            )
        finally:
            self._probing = False
            for module, training in modes.items():
                module.training = training
            self.calls.clear()
            self.calls.embedding_runs = 0
            self._start_call()

    def detach(self) -> None:
        if not self._hooks:
            return
        for hook in [*self._hooks, *self._block_hooks.values()]:
            hook.remove()
        self._hooks, self._block_hooks = [], {}
        self._end_eager()
        self.calls.clear()
        self._replays.clear()
        self._plan, self._noise, self._learning = None, None, None
        self.noise.close()
        _attached.pop(self.embeddings, None)
        logger.warning(
            "neft_plugins: detached NEFTune from %s: %s", self.noise_site, self.noise.stats.summary()
        )

    @property
    def alpha(self) -> float:
        """The alpha in force (after the schedule)."""
        return self.noise.alpha

    def set_step(self, step: int, total_steps: int) -> float:
        """Move the alpha schedule to optimizer step ``step`` of ``total_steps``; returns the alpha in force."""
        for replays in self._replays.values():
            replays.clear()  # the last step's backward passes are done
        self._step_set = True
        self.noise.alpha = float(self._schedule(self.config.neftune_alpha, step, total_steps))
        self._noising = self.alpha > 0
        return self.alpha

    def read_logs(self) -> dict[str, float]:
        """The ``neft/*`` log entries since the last read; warns once if training passes ran but no token got
        noise (the case a log line alone would not make obvious)."""
        observed = self.noise.stats.records
        logs = self.noise.stats.read_and_reset(self.alpha)
        # Inside a compiled graph the runs are not counted (a counter would be a guard): its records tell.
        ran = self.calls.embedding_runs > self._runs_at_last_read or observed > 0
        self._runs_at_last_read = self.calls.embedding_runs
        if ran and self.alpha > 0 and logs["neft/tokens_noised"] == 0 and not self._warned_nothing_noised:
            self._warned_nothing_noised = True
            logger.warning(
                "neft_plugins: no token got noise since the last log although %s ran in training passes: every "
                "sequence had all labels -100 (nothing supervised)%s, or was padding.",
                self.embeddings_path,
                ""
                if self.config.neftune_scope == "all"
                else f", or neftune_scope {self.config.neftune_scope!r} left none",
            )
        return logs

    def rng_state(self) -> torch.Tensor | None:
        """The noise generator's state (None while noise comes from torch's global RNG)."""
        return self.noise.stream.state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        self.noise.stream.set_state(state)

    def save_noise_state(self, checkpoint: str) -> None:
        """Save this rank's noise stream into the training checkpoint folder ``checkpoint``."""
        self.noise.stream.save(checkpoint)

    def load_noise_state(self, checkpoint: str) -> None:
        """Continue the noise stream saved in ``checkpoint`` (said once when that cannot be exact)."""
        self.noise.stream.load(checkpoint)

    # --- the model call ------------------------------------------------------------------------------------

    def _start_call(self) -> None:
        self._plan, self._noise = None, None
        self._noised_blocks.clear()
        self._eval_mode_pass = False

    def _end_call(self, module: nn.Module, output: Any) -> None:
        plan, noise = self._plan, self._noise
        if self._eval_mode_pass and self._noising and not self._warned_eval_mode:
            # Said only if a backward pass runs through it: evaluation without no_grad() is no training pass.
            _on_backward(output, lambda: self._warn_eval_mode(type(module).__name__))
        self._start_call()
        if plan is not None and noise is None and output is not None:
            raise NEFTuneInputError(
                f"{type(module).__name__}: a training pass ran {self.embeddings_path} but not "
                f"{self.block_paths[0] if self.blocks else self.noise_site}, where NEFTune adds its noise, so it "
                "got none. The model routes its embeddings around its first block; attach to a model whose blocks "
                "run in order, or report the model to neft-plugins."
            )
        if self._learning is not None and noise is not None and not torch.compiler.is_compiling():
            self._learnt(self._learning)

    def _learnt(self, learning: Learning) -> None:
        """Keep the carriers found on the first noised pass; only the blocks that have some keep their hook."""
        carriers = learning.carriers
        self._learning, self.carriers = None, carriers
        for index in [index for index in self._block_hooks if index not in carriers]:
            self._block_hooks.pop(index).remove()
        found = [
            f"{self.block_paths[index]} {_input_name(key)} ({copies.describe()})"
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

    def _eager_until_learnt(self, module: nn.Module, args: tuple) -> None:
        if self.carriers is None and self._noising and module.training and torch.is_grad_enabled():
            self._eager_stance = torch.compiler.set_stance("force_eager")

    def _end_eager(self, *_: Any) -> None:
        stance, self._eager_stance = self._eager_stance, None
        if stance is not None:
            stance.__exit__(None, None, None)

    # --- the hooks -----------------------------------------------------------------------------------------

    def _warn_eval_mode(self, model_name: str) -> None:
        if self._warned_eval_mode:
            return
        self._warned_eval_mode = True
        logger.warning(
            "neft_plugins: a backward pass ran through a forward pass of %s made in eval mode, so NEFTune added "
            "no noise to it: NEFTune noises training passes only (the model in training mode and autograd on). "
            "from_pretrained() returns a model in eval mode: call model.train() before training.",
            model_name,
        )

    def _warn_no_step(self) -> None:
        self._warned_no_step = True
        logger.warning(
            "neft_plugins: neftune_schedule %r changes alpha over the optimizer steps, but set_step(step, "
            "total_steps) was not called before this training pass, so alpha is %s. Call handle.set_step(step, "
            "total_steps) at each optimizer step (NEFTuneCallback does it in a Trainer).",
            self.config.neftune_schedule,
            self.alpha,
        )

    def _embedding_hook(self, module: nn.Module, args: tuple, output: Any) -> torch.Tensor | None:
        training = (module.training and torch.is_grad_enabled()) or self._probing
        if not training or self.calls.in_decoder():
            if torch.is_grad_enabled() and not module.training and not torch.compiler.is_compiling():
                self._eval_mode_pass = True
            return None  # not a training pass, or the decoder's teacher-forced input: not the instruction
        if not torch.compiler.is_compiling():
            self.calls.embedding_runs += 1
            if self.config.neftune_schedule != "constant" and not (
                self._step_set or self._warned_no_step or self._probing
            ):
                self._warn_no_step()
        if not self._noising:
            return None
        if not isinstance(output, torch.Tensor) or output.dim() != 3:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise NEFTuneInputError(
                f"{self.embeddings_path} returned {shape}; NEFTune needs a [batch, sequence, dim] tensor. "
                "Attach to a model whose get_input_embeddings() is the token embedding module."
            )
        transposed = self._transposed(self.calls.inputs, args)
        embedded = output.transpose(0, 1) if transposed else output
        plan = self.reader.read(
            self.calls.inputs, (embedded.shape[0], embedded.shape[1]), embedded.device, transposed
        )
        if self.config.neftune_length == "padded":
            return output + self.noise.padded(output, embedded, plan)
        if self.first_block is None:
            return output + self._noise_for(output, plan)
        self._plan = plan
        return None

    def _block_hook_at(self, index: int) -> Callable[[nn.Module, tuple, dict], tuple[tuple, dict] | None]:
        def block_hook(block: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            return self._block_hook(index, block, args, kwargs)

        return block_hook

    def _block_hook(
        self, index: int, block: nn.Module, args: tuple, kwargs: dict
    ) -> tuple[tuple, dict] | None:
        if index == 0 and self._plan is not None and self._noise is None:
            self._noise = self._first_noise(args, kwargs)
        if self._noise is None:
            return self._replayed(index, args, kwargs)
        if index in self._noised_blocks:
            return None  # a block that runs again in the same call (ALBERT's shared layer) gets it once
        self._noised_blocks.add(index)
        return self._with_noise(index, block, args, kwargs, self._carriers_in(index, args, kwargs))

    def _first_noise(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """This call's noise for one copy of the embeddings, as the first block receives them; recorded."""
        plan, self._plan = self._plan, None
        key = _hidden_key(args, kwargs)
        if key is None:
            raise NEFTuneInputError(
                f"{self.block_paths[0]} was called without a hidden-states tensor, so NEFTune has nothing to add "
                "its noise to."
            )
        hidden = _input(args, kwargs, key)
        copies = self._copies_in_first_input(hidden, plan)
        embeddings = copies.embeddings(hidden)
        noise = self._noise_for(embeddings, plan, probe=self._probing)
        if self.carriers is None and not torch.compiler.is_compiling() and bool(plan.noised.any()):
            # Learnt on a pass that noises something: with no noise, a block that passes its input through
            # unchanged (zero-initialised) would look like one that is handed the clean embeddings again.
            self._learning = Learning(embeddings.detach().clone())
        return noise

    def _copies_in_first_input(self, hidden: torch.Tensor, plan: NoisePlan) -> Copies:
        if self.first_copies is None:
            self._refuse_while_compiling()
            rows, length = plan.segments.shape
            try:
                self.first_copies = copies_in_first_input(hidden, {(rows, length), (length, rows)})
            except NEFTuneInputError as error:
                raise NEFTuneInputError(f"{self.block_paths[0]} received {error}") from None
        if not self.first_copies.fits(hidden):
            self._refuse_layout(hidden, plan)
        return self.first_copies

    def _carriers_in(self, index: int, args: tuple, kwargs: dict) -> Carriers:
        """The inputs of block ``index`` that carry the embeddings: learnt, or being learnt on this pass."""
        if self.carriers is not None:
            return self.carriers.get(index, ())
        self._refuse_while_compiling()
        first = _hidden_key(args, kwargs) if index == 0 else None
        learning = self._learning
        found: list[tuple[InputKey, Copies]] = []
        for key, value in _tensor_inputs(args, kwargs):
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

    def _with_noise(
        self, index: int, block: nn.Module, args: tuple, kwargs: dict, carriers: Carriers
    ) -> tuple[tuple, dict] | None:
        if not carriers:
            return None
        replaced: dict[InputKey, torch.Tensor] = {}
        for key, copies in carriers:
            value = _input(args, kwargs, key)
            noise = copies.spread(self._noise)
            if not isinstance(value, torch.Tensor) or value.shape != noise.shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise NEFTuneInputError(
                    f"{self.block_paths[index]}'s input {_input_name(key)} carried the embeddings on the first "
                    f"training pass ({copies.describe()}) but now holds {shape}, not {tuple(noise.shape)}: the "
                    "model changed how it hands its blocks the embeddings, and NEFTune learnt it once."
                )
            noise = noise.to(value.dtype)
            # A compiled graph's checkpointing recomputes inside the graph, without running this hook again.
            if not torch.compiler.is_compiling() and not self._probing and may_recompute(block):
                self._replays_of(index, key).keep(value, noise)
            replaced[key] = value + noise
        return _replace(args, kwargs, replaced)

    def _replayed(self, index: int, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """In backward's recompute of a checkpointed block, the noise its forward pass got."""
        if torch.compiler.is_compiling() or not self._replays:
            return None
        replaced: dict[InputKey, torch.Tensor] = {}
        for key, value in _tensor_inputs(args, kwargs):
            replays = self._replays.get((index, key))
            noise = replays.replay_for(value) if replays is not None else None
            if noise is not None:
                replaced[key] = value + noise
        return _replace(args, kwargs, replaced) if replaced else None

    def _replays_of(self, index: int, key: InputKey) -> Replays:
        site = f"{self.block_paths[index]} {_input_name(key)}"
        return self._replays.setdefault((index, key), Replays(site))

    def _refuse_while_compiling(self) -> None:
        if torch.compiler.is_compiling():
            raise NEFTuneInputError(
                f"NEFTune learns which inputs of {type(self.blocks[0]).__name__} and the blocks after it carry "
                "the embeddings on its first noised training pass, and that pass is being compiled. Attach to the "
                "torch.compile'd module (its first passes then run eagerly), or run one training step before "
                "compiling."
            )

    def _refuse_layout(self, hidden: torch.Tensor, plan: NoisePlan) -> None:
        raise NEFTuneInputError(
            f"{self.block_paths[0] if self.blocks else self.noise_site} received hidden states of shape "
            f"{tuple(hidden.shape)} for a batch of {tuple(plan.segments.shape)} tokens: the model inserts, "
            "removes or re-lays positions between its embeddings and its first block, so NEFTune cannot line "
            "the batch's masks up with them. Refusing rather than noise the wrong positions."
        )

    # --- the noise -----------------------------------------------------------------------------------------

    def _transposed(self, call: Mapping[str, Any], args: tuple) -> bool:
        """Whether the model embeds its ids as ``[L, B]`` (XLNet); refuses ids the model re-laid otherwise."""
        input_ids, embedded_ids = call.get("input_ids"), args[0] if args else None
        if not isinstance(input_ids, torch.Tensor) or not isinstance(embedded_ids, torch.Tensor):
            return False
        if input_ids.dim() != 2 or embedded_ids is input_ids:
            return False
        rows, length = input_ids.shape
        if embedded_ids.shape == input_ids.shape:
            if rows != length:
                self._ids_transposed = False
            elif not torch.compiler.is_compiling():
                # A square batch cannot tell a transposed layout by shape (the only case that syncs, so the
                # compiled graph reads it as the last non-square batch was).
                self._ids_transposed = torch.equal(embedded_ids, input_ids.T) and not torch.equal(
                    embedded_ids, input_ids
                )
            return self._ids_transposed
        if embedded_ids.shape == (length, rows):
            self._ids_transposed = True
            return True
        raise NEFTuneInputError(
            f"{self.embeddings_path} embedded token ids of shape {tuple(embedded_ids.shape)} for input_ids of "
            f"shape {tuple(input_ids.shape)}: the model adds or removes tokens before its embeddings (CPM-Ant "
            "prepends prompt tokens), so NEFTune cannot line the batch's masks up with them. Refusing rather than "
            "noise the wrong positions."
        )

    def _noise_for(self, hidden: torch.Tensor, plan: NoisePlan, probe: bool = False) -> torch.Tensor:
        """``alpha / sqrt(L_s * d)`` noise per sequence for ``hidden`` (one copy of the embeddings; d: its width),
        in its dtype and layout, recorded (the probe pass's: its own, not recorded)."""
        transposed = plan.transposed or self._transposed_at_block(hidden, plan)
        received = hidden.transpose(0, 1) if transposed else hidden
        if received.dim() != 3 or tuple(received.shape[:2]) != tuple(plan.segments.shape):
            self._refuse_layout(hidden, plan)
        noise = self.noise.probe(received, plan) if probe else self.noise.per_sequence(received, plan)
        return noise.transpose(0, 1) if transposed else noise

    def _transposed_at_block(self, hidden: torch.Tensor, plan: NoisePlan) -> bool:
        """Whether the model turned its embeddings to ``[L, B, d]`` before the block (FSMT, Mega), told by the
        shape; a square batch is read as the last non-square one was (batch-major before any)."""
        rows, length = plan.segments.shape
        if rows != length and hidden.dim() == 3:
            self._block_transposed = tuple(hidden.shape[:2]) == (length, rows)
        return self._block_transposed


def _on_backward(output: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` when a backward pass runs through a tensor of ``output`` (the loss, the logits...)."""
    values = (
        output.values() if isinstance(output, Mapping) else output if isinstance(output, tuple) else [output]
    )
    for value in values:
        if isinstance(value, torch.Tensor) and value.requires_grad:
            value.register_hook(lambda grad: callback())


def _hidden_key(args: tuple, kwargs: dict[str, Any]) -> InputKey | None:
    """Where a block's hidden-states input is: ``hidden_states=``, or its first tensor argument."""
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return "hidden_states"
    return next((index for index, arg in enumerate(args) if isinstance(arg, torch.Tensor)), None)


def _tensor_inputs(args: tuple, kwargs: dict[str, Any]) -> Iterator[tuple[InputKey, torch.Tensor]]:
    yield from ((index, arg) for index, arg in enumerate(args) if isinstance(arg, torch.Tensor))
    yield from ((name, value) for name, value in kwargs.items() if isinstance(value, torch.Tensor))


def _input(args: tuple, kwargs: dict[str, Any], key: InputKey) -> Any:
    if isinstance(key, int):
        return args[key] if key < len(args) else None
    return kwargs.get(key)


def _replace(
    args: tuple, kwargs: dict[str, Any], replaced: Mapping[InputKey, torch.Tensor]
) -> tuple[tuple, dict]:
    new_args = tuple(replaced.get(index, arg) for index, arg in enumerate(args))
    named = {name: value for name, value in replaced.items() if isinstance(name, str)}
    return new_args, {**kwargs, **named}


def _input_name(key: InputKey) -> str:
    return f"argument {key}" if isinstance(key, int) else repr(key)


def attach(
    model: nn.Module,
    config: NEFTuneConfig | None = None,
    *,
    sequence_group: torch.distributed.ProcessGroup | None = None,
    **keys: Any,
) -> NEFTuneHandle:
    """Attach NEFTune to ``model``: ``attach(model, neftune_alpha=5)`` or ``attach(model, config)``.

    ``sequence_group``: the context-parallel group whose ranks each hold a slice of every sequence; L is
    then counted over the whole sequence, across the group.
    """
    return NEFTuneHandle(model, as_config(config, keys), sequence_group)


@contextlib.contextmanager
def neftune(
    model: nn.Module,
    config: NEFTuneConfig | None = None,
    *,
    sequence_group: torch.distributed.ProcessGroup | None = None,
    **keys: Any,
) -> Iterator[NEFTuneHandle]:
    """``with neftune(model, neftune_alpha=5): ...`` noises training forward passes inside the block only."""
    handle = attach(model, config, sequence_group=sequence_group, **keys)
    try:
        yield handle
    finally:
        handle.detach()
