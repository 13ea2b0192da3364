"""Config loading: every mistake names the file, the key and what would be right."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from stegobench.core.config import CheckError, ConfigError, apply_overrides, describe, from_dict, load_config, option
from stegobench.data_gen.track import TrackConfig


@dataclass
class Inner:
    rate: float = option(0.1, "a rate")


@dataclass
class Outer:
    name: str = option("x", "a name")
    count: int = option(1, "a count")
    inner: Inner = option(None, "nested", factory=Inner)
    tags: list[str] = option(None, "tags", factory=list)

    def check(self) -> None:
        if self.count > 100:
            raise CheckError("count", "must be at most 100")


def write(tmp_path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    p = write(tmp_path, "name: a\ncuont: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p)
    msg = str(e.value)
    assert str(p) in msg and "'cuont'" in msg and "did you mean 'count'" in msg


def test_unknown_nested_key_uses_dotted_path(tmp_path):
    p = write(tmp_path, "inner:\n  rat: 0.2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'inner\.rat'.*did you mean 'inner\.rate'"):
        load_config(Outer, p)


@pytest.mark.parametrize("text, key, expected", [
    ("count: three\n", "count", "an integer"),
    ("count: true\n", "count", "an integer"),
    ("inner:\n  rate: fast\n", "inner.rate", "a number"),
    ("tags: solo\n", "tags", "a list of strings"),
])
def test_wrong_type_names_key_and_expected_type(tmp_path, text, key, expected):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p)
    assert f"{p}: {key}: expected {expected}" in str(e.value)


def test_literal_lists_the_allowed_values(tmp_path):
    p = write(tmp_path, "code_kind: emoji\n")
    with pytest.raises(ConfigError, match=r"code_kind: expected one of 'real_word', 'nonsense', got 'emoji'"):
        load_config(TrackConfig, p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_invalid_yaml_reports_line(tmp_path):
    p = write(tmp_path, "name: a\ncount: [1, 2\n")
    with pytest.raises(ConfigError, match=r"line \d+.*invalid YAML"):
        load_config(Outer, p)


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Outer, write(tmp_path, "- a\n- b\n"))


def test_check_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: count: must be at most 100"):
        load_config(Outer, write(tmp_path, "count: 101\n"))


def test_overrides_are_typed_and_dotted(tmp_path):
    cfg = load_config(Outer, write(tmp_path, "count: 2\n"), ["count=5", "inner.rate=0.5", "tags=[a, b]"])
    assert cfg.count == 5 and cfg.inner.rate == 0.5 and cfg.tags == ["a", "b"]


def test_override_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["count"])
    with pytest.raises(ConfigError, match=r"--set count=lots\): count: expected an integer"):
        load_config(Outer, write(tmp_path, ""), ["count=lots"])


def test_defaults_and_describe_cover_every_field():
    cfg = from_dict(Outer, {})
    assert cfg.count == 1 and cfg.inner.rate == 0.1 and cfg.tags == []
    lines = describe(TrackConfig)
    for name in TrackConfig.__dataclass_fields__:
        assert any(line.startswith(name + " ") for line in lines), name
    assert all(": " in line and line.split(": ", 1)[1] for line in lines)
    # An optional nested config (`augment: AugmentConfig | None`) lists its own keys too.
    assert any(line.startswith("augment.n_per_mapping (an integer, default 10)") for line in lines)


def test_track_check_rejects_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="heldout_fraction: must be between 0 and 1"):
        load_config(TrackConfig, write(tmp_path, "heldout_fraction: 1.5\n"))
    with pytest.raises(ConfigError, match="n_demonstrated: must be >= 0"):
        load_config(TrackConfig, write(tmp_path, "n_demonstrated: -1\n"))


def test_a_backend_option_typo_is_an_error_naming_the_key(tmp_path):
    """`tensor_paralel_size` used to be dropped silently by the backend's **kwargs."""
    from stegobench.eval.config import EvalConfig

    with pytest.raises(ConfigError, match=r"backend_options: for backend 'vllm': unknown key 'tensor_paralel_size'; "
                                          r"did you mean 'tensor_parallel_size'\?"):
        load_config(EvalConfig, None, ["backend=vllm", "backend_options={tensor_paralel_size: 8}"])
    with pytest.raises(ConfigError, match=r"backend_options: for backend 'hf': batch_size: expected an integer, got 'many'"):
        load_config(EvalConfig, None, ["backend=hf", "backend_options={batch_size: many}"])
    with pytest.raises(ConfigError, match=r"gpu_memory_utilization: must be in \(0, 1\]"):
        load_config(EvalConfig, None, ["backend=vllm", "backend_options={gpu_memory_utilization: 2}"])
    with pytest.raises(ConfigError, match=r"backend: unknown backend 'mokc'; choose from auto, hf, mock, vllm"):
        load_config(EvalConfig, None, ["backend=mokc"])
    ok = load_config(EvalConfig, None, ["backend=vllm", "backend_options={tensor_parallel_size: 8, dtype: bfloat16}"])
    assert ok.backend_options == {"tensor_parallel_size": 8, "dtype": "bfloat16"}


def test_one_resolver_turns_a_config_name_into_its_file(tmp_path, monkeypatch):
    from stegobench.core.paths import CONFIGS, config_path

    mine = write(tmp_path, "seed: 1\n")
    monkeypatch.chdir(tmp_path)  # away from the checkout: names and checkout-relative paths still resolve
    assert config_path("data", mine) == mine and config_path(None, "c.yaml") == Path("c.yaml")
    assert config_path("data", "real-v1") == CONFIGS / "data" / "real-v1.yaml"
    assert config_path(None, "real-v1") == CONFIGS / "data" / "real-v1.yaml"  # the one shipped config of that name
    assert config_path("data", "configs/data/quickstart.yaml").resolve() == CONFIGS / "data" / "quickstart.yaml"
    assert config_path("accelerate", "cpu") == CONFIGS / "accelerate" / "cpu.yaml"
    with pytest.raises(ConfigError, match=r"real-v9: no such file, and no shipped data config of that name "
                                          r"\(shipped: .*nonsense-v1.*\)"):
        config_path("data", "real-v9")
    with pytest.raises(ConfigError, match="several shipped configs are named so: .*eval/default.yaml"):
        config_path(None, "default")
    with pytest.raises(ConfigError, match="no shipped data config"):  # a shipped name of another kind is not this kind
        config_path("data", "elsewhere/eval/default.yaml")
