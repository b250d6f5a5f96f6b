"""The file for ``swift sft`` and ``swift rlhf`` itself: ``--external_plugins FILE --callbacks neftune`` (both
commands take the two flags; ``neft-swift plugin`` prints them).

Our keys come from ``NEFTUNE_*`` environment variables (``NEFTUNE_ALPHA=5``, or an ``ENV:`` section in a swift
YAML config): ``swift sft`` and ``swift rlhf`` refuse flags they do not know. They are checked when ms-swift imports
this file, while it parses its arguments, before any model loads; a bad one stops ``swift sft`` or ``swift rlhf`` as
neft-swift's errors stop it (:func:`neft_plugins.integrations.launcher.error_status`):
``neft-swift plugin: error: <message>``, exit status 2.
"""

from neft_plugins.errors import NEFTuneError
from neft_plugins.integrations.launcher import error_status
from neft_plugins.integrations.swift.callback import config_from_environment, register

try:
    register(config_from_environment())
except NEFTuneError as error:
    raise SystemExit(error_status("neft-swift plugin", error)) from None
