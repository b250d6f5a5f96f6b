"""The machinery behind ``NEFTuneHandle`` (private: only ``neft_plugins.handle`` builds it). One job per module:

- ``sites``, ``structure``: where the noise goes (the embedding module, the blocks, the noise site's name);
- ``calls``: the model call in progress, and the embedding module's training runs;
- ``embedding_hook``, ``plan``: a training batch read into a ``NoisePlan`` at the embeddings;
- ``layout``: how the ids and the first block's input are laid out, and the layouts refused;
- ``learning``, ``carriers``, ``probe``: which block inputs carry the embeddings, learnt once;
- ``block_noise``, ``block_inputs``, ``replays``: the blocks' inputs noised, and again in a checkpointed block's
  recompute;
- ``noise_source``, ``noise_stream``, ``custom_ops``, ``stats``: drawing, recording and summing the noise;
- ``compile_stance``: eager passes until the carriers are learnt; ``once_warnings``: the handle's warnings.
"""
