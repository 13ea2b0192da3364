"""The exit-code contract: each error class exits with its code through the CLI, with one line naming the command,
and README's table says the same as core/errors.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stegobench.cli import env as env_command
from stegobench.cli.main import main
from stegobench.benchmark.store import StoreError
from stegobench.benchmark.validation import Rejected
from stegobench.core import errors
from stegobench.core.errors import (CommandFailed, ConfigError, InputError, Interrupted, OutputDirError,
                                    ResourceError, StegobenchError, UsageError, UserError)
from stegobench.eval.backends import BackendUnavailable

REPO = Path(__file__).resolve().parent.parent
CODES = [(ConfigError, 2), (InputError, 2), (OutputDirError, 2), (UsageError, 2), (Rejected, 2), (UserError, 2),
         (ResourceError, 2), (StoreError, 2), (BackendUnavailable, 2), (StegobenchError, 2), (CommandFailed, 1),
         (Interrupted, 130)]


def _env_raises(monkeypatch, exc: BaseException) -> None:
    def fail(_args) -> int:
        raise exc

    monkeypatch.setattr(env_command, "run", fail)


@pytest.mark.parametrize("cls,code", CODES, ids=[c.__name__ for c, _ in CODES])
def test_each_error_class_exits_with_its_code_and_one_line(monkeypatch, capsys, cls, code):
    _env_raises(monkeypatch, cls("what went wrong, and what would be right"))
    assert main(["env"]) == code
    err = capsys.readouterr().err
    assert err.splitlines() == ["stegobench env: error: what went wrong, and what would be right"], err


def test_ctrl_c_exits_130_and_an_internal_error_keeps_its_traceback(monkeypatch, capsys):
    _env_raises(monkeypatch, KeyboardInterrupt())
    assert main(["env"]) == 130
    assert capsys.readouterr().err.strip() == "stegobench env: stopped by Ctrl-C; nothing was written"
    _env_raises(monkeypatch, ZeroDivisionError("a bug"))
    with pytest.raises(ZeroDivisionError):
        main(["env"])


def test_a_machine_error_in_a_run_command_points_to_env_and_a_users_does_not(monkeypatch, capsys, tmp_path):
    from stegobench.benchmark import worker

    def fail(exc):
        def run(self, once, max_jobs):
            raise exc
        return run

    config = ["--set", f"data_dir={tmp_path}", "--set", "database_url=sqlite://"]
    monkeypatch.setattr(worker.Worker, "run", fail(ResourceError("not enough memory")))
    assert main(["worker", *config]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == errors.ENV_POINTER
    monkeypatch.setattr(worker.Worker, "run", fail(InputError("adapter x: no adapter_config.json")))
    assert main(["worker", *config]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "stegobench worker: error: adapter x: no adapter_config.json"


def test_usage_mistakes_are_one_line_and_exit_2(capsys):
    assert main(["validate", "no-such-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stegobench validate: error: no-such-config: no such file, and no shipped config of that "
                          "name (shipped: ") and "real-v1" in err and "\n" not in err
    assert main(["validate", "--describe", "nope"]) == 2
    assert capsys.readouterr().err.strip() == ("stegobench validate: error: --describe: unknown kind 'nope'; choose "
                                               "from data, finetune, eval, leaderboard")
    with pytest.raises(SystemExit) as usage:  # argparse's own usage errors exit 2 as well
        main(["gen"])
    assert usage.value.code == 2


def _readme_table() -> dict[int, set[str]]:
    """{exit code: the error classes README's "Exit codes" table names for it}."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    return {int(row.split("|")[1]): set(re.findall(r"`(\w+)`", row.split("|")[3])) for row in rows}


def test_the_readme_table_is_the_contract_core_errors_enforces():
    table = _readme_table()
    assert set(table) == {errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_ERROR, errors.EXIT_INTERRUPTED}
    named = {cls.__name__: cls for cls, _ in CODES}
    for code, names in table.items():
        for name in names:
            assert named[name].exit_code == code, (name, code)
    # every class with its own code is in the table under it
    assert {c.__name__ for c, code in CODES if code != errors.EXIT_ERROR} <= table[1] | table[130]
