"""The file for ``swift sft --external_plugins FILE --callbacks neftune`` (``neft-swift plugin`` prints both).

Our keys come from ``NEFTUNE_*`` environment variables (``NEFTUNE_ALPHA=5``, or an ``ENV:`` section in a swift
YAML config): ``swift sft`` refuses flags it does not know. They are checked when ms-swift imports this file,
while it parses its arguments, before any model loads.
"""

import sys

from neft_plugins.errors import NEFTuneError
from neft_plugins.integrations.swift.callback import config_from_environment, register

try:
    register(config_from_environment())
except NEFTuneError as error:
    print(f"neft-swift plugin: error: {error}", file=sys.stderr)
    raise SystemExit(1) from None
