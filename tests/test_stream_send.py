"""`run_now`, how the stream sends a frame without a task switch: what finishes at once is done on return, what
has to wait is finished by a task, in order, and an early failure is raised to the caller."""

from __future__ import annotations

import asyncio

import pytest

from mockglot.api.stream import run_now


async def test_a_coroutine_that_never_waits_is_done_on_return() -> None:
    done: list[str] = []

    async def send() -> None:
        done.append("sent")

    assert run_now(send()) is None
    assert done == ["sent"]


async def test_a_coroutine_that_waits_is_finished_by_a_task_and_sees_what_it_waited_for() -> None:
    gate = asyncio.Event()
    failing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def send() -> None:
        seen.append("started")
        await gate.wait()
        seen.append("drained")
        try:
            await failing
        except ValueError as exc:
            seen.append(f"saw {exc}")
        await asyncio.sleep(0)
        seen.append("done")

    task = run_now(send())
    assert task is not None and seen == ["started"]
    gate.set()
    await asyncio.sleep(0.01)
    assert seen == ["started", "drained"]
    failing.set_exception(ValueError("the socket went away"))
    await task
    assert seen == ["started", "drained", "saw the socket went away", "done"]


async def test_a_failure_before_the_first_wait_is_raised_to_the_caller() -> None:
    async def send() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        run_now(send())
