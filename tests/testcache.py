"""Where tests keep expensive inputs: the SmolLM2 wheel, built engines, converted models.

DEPLOY_TEST_CACHE moves it (scripts/test points it at a per-user cache, so every checkout
and CI's fresh clone on the same machine share one build of each engine; a new machine
builds them on first use). Default: .cache/ in the checkout (git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE = Path(
    os.environ.get("DEPLOY_TEST_CACHE") or Path(__file__).resolve().parents[1] / ".cache"
).resolve()
