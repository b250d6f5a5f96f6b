"""What the Unsloth tests and their script share: the tiny model's sizes and the training records."""

from support.tiny import HIDDEN, text_records

__all__ = ["HIDDEN", "MAX_LENGTH", "sft_records"]
MAX_LENGTH = 128


def sft_records() -> list[dict]:
    """16 texts of 3 to 40 words."""
    return text_records(16, lengths=range(3, 41))
