"""Suite-wide setup: make the test-only plugins (tests/plugins/*) discoverable.

`make test` installs them into .venv/test-plugins, beside the venv rather than into it, so the
demo and `voltwatch run` never load a plugin that exists only to fail. Putting the folder on
sys.path (and on PYTHONPATH for subprocesses such as `voltwatch plugins`) makes their entry
points visible to importlib.metadata exactly as an installed plugin's are.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TEST_PLUGIN_DIR = Path(sys.prefix) / "test-plugins"

if TEST_PLUGIN_DIR.is_dir():
    if str(TEST_PLUGIN_DIR) not in sys.path:
        sys.path.append(str(TEST_PLUGIN_DIR))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(TEST_PLUGIN_DIR) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, str(TEST_PLUGIN_DIR)])
