"""MLX-LM adapter: ``neft-mlx lora`` is ``mlx_lm.lora`` with neft-plugins' NEFTune keys. Imports no torch.

The engine is ``neft_plugins.mlx`` (``train`` for a Python script of one's own); this package only translates
MLX-LM's command line and YAML config into it.
"""
