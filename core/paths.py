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


def config_path(kind: str | None, name: str | Path) -> Path:
    """The one place a config's name becomes its file: `name` as given when it exists (a relative path also from
    the source checkout, as configs name each other: 'configs/data/quickstart.yaml'), else the shipped config of
    that name: ('data', 'real-v1') -> configs/data/real-v1.yaml, ('accelerate', 'cpu') -> configs/accelerate/cpu.yaml.
    kind None: the one shipped config of that name among the kinds `stegobench validate` checks."""
    from .errors import ConfigError

    path = Path(name)
    for candidate in (path, REPO_ROOT / path):  # an absolute path stays itself
        if candidate.is_file():
            return candidate
    kinds = [kind] if kind else list(CONFIG_FOLDERS)
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    found = [CONFIGS / k / f"{stem}.yaml" for k in kinds
             if (CONFIGS / k / f"{stem}.yaml").is_file() and (path.parent == Path(".") or path.parts[-2:-1] == (k,))]
    if len(found) == 1:
        return found[0]
    if found:
        raise ConfigError(f"{name}: no such file; several shipped configs are named so: {', '.join(map(str, found))}")
    names = ", ".join(sorted({p.stem for p in shipped_configs(kind)}))
    raise ConfigError(f"{name}: no such file, and no shipped {kind + ' ' if kind else ''}config of that name "
                      f"(shipped: {names})")
