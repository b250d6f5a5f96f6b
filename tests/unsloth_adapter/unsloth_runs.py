"""What the Unsloth tests and their script share: the tiny model's sizes and the training records."""

from support.tiny import text_records

HIDDEN = 64  # the tiny Llama's width: d in alpha / sqrt(L * d)
MAX_LENGTH = 128


def sft_records() -> list[dict]:
    """16 texts of 3 to 40 words."""
    return text_records(16, lengths=range(3, 41))
