"""Where the source checkout is: configs/ and the git revision are read from it (one definition, not one per module)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"
