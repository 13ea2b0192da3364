"""Progress bars that advance answer by answer, with an ETA, for every long step of an eval: decoding, scoring,
monitors and white-box reading.

A step opens one bar over all its work (`bar`); whatever runs inside reports finished units (`report`) without
being handed the bar, so the backends' `generate(prompts, sampling)` keeps its signature: the hf backend reports
each batch, vLLM each finished request (through its own `use_tqdm` hook, `vllm_progress`), the mock each call. A
step that runs code which reports nothing still advances when that code returns (`Bar.done`).
"""

from __future__ import annotations

import contextvars
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

_LISTENER: contextvars.ContextVar[Callable[[int], None] | None] = contextvars.ContextVar("stegobench_progress",
                                                                                        default=None)


def report(n: int = 1) -> None:
    """n more units of the current step are finished (nothing happens outside a step)."""
    listener = _LISTENER.get()
    if listener is not None and n:
        listener(n)


def listening() -> bool:
    return _LISTENER.get() is not None


class Bar:
    """One step's bar: `report`s inside it advance it; `done(k)` tops it up to k units past where a piece of work
    began, for code that reported less."""

    def __init__(self, tqdm_bar):
        self.tqdm = tqdm_bar

    @property
    def n(self) -> int:
        return self.tqdm.n

    def done(self, since: int, units: int) -> None:
        missing = since + units - self.tqdm.n
        if missing > 0:
            self.tqdm.update(missing)


@contextmanager
def listen(callback: Callable[[int], None]) -> Iterator[None]:
    """`report`s inside the block call `callback(n)` (a step's bar; a test's list)."""
    token = _LISTENER.set(callback)
    try:
        yield
    finally:
        _LISTENER.reset(token)


@contextmanager
def bar(total: int, desc: str, unit: str = "answer") -> Iterator[Bar]:
    """A tqdm bar of `total` units (rate and ETA) that `report`s inside the block advance."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, disable=total == 0, dynamic_ncols=True) as t, listen(t.update):
        yield Bar(t)


class _Forward:
    """What vLLM's engine loop takes for a tqdm bar (`update`, `n`, `postfix`, `format_dict['elapsed']`,
    `refresh`, `close`): it forwards each finished request to the step's bar instead of drawing a second one."""

    def __init__(self, total: int | None = None, **_: Any):
        self.total, self.n, self.postfix, self._start = total, 0, "", time.monotonic()

    @property
    def format_dict(self) -> dict[str, float]:
        return {"elapsed": max(time.monotonic() - self._start, 1e-6)}  # vLLM divides tokens by it

    def update(self, n: int = 1) -> None:
        self.n += n
        report(n)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def vllm_progress(iterable: Any = None, **kwargs: Any) -> Any:
    """vLLM's `use_tqdm` callable: its prompt-rendering pass (called with an iterable) shows nothing, its engine
    loop (called with a total) reports each finished request."""
    return iterable if iterable is not None else _Forward(**kwargs)
