"""Every test session runs offline (``support.env.OFFLINE_ENV``), and so does every process a test starts:
set here, before any test imports a framework, unless the caller set them already."""

from __future__ import annotations

import os

from support.env import OFFLINE_ENV

for key, value in OFFLINE_ENV.items():
    os.environ.setdefault(key, value)
