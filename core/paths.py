"""Where the source checkout is: configs/ and the git revision are read from it (one definition, not one per module)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"

# Folders of configs/ whose files `stegobench validate` checks and whose names the CLI accepts for --config.
CONFIG_FOLDERS = ("data", "finetune", "eval", "leaderboard")


def shipped_configs(kind: str | None = None) -> list[Path]:
    """The YAML configs that ship with stegobench (package data in an installed wheel), of one kind or all."""
    kinds = [kind] if kind else list(CONFIG_FOLDERS)
    return sorted(p for k in kinds for p in (CONFIGS / k).glob("*.yaml"))


def config_path(kind: str, name: str | Path) -> Path:
    """A config file as given when it exists, else a shipped one by name: ('data', 'real-v1') -> configs/data/real-v1.yaml."""
    from .errors import ConfigError

    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIGS / kind / f"{path.stem if path.suffix in ('.yaml', '.yml') else path.name}.yaml"
    if shipped.is_file() and (path.parent == Path(".") or path.parts[-2:-1] == (kind,)):
        return shipped
    names = ", ".join(p.stem for p in shipped_configs(kind))
    raise ConfigError(f"{name}: no such file, and no shipped {kind} config of that name (shipped: {names})")
