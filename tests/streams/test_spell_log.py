import logging

from streams.spell_log import SpellLog, flush_every_spell_log


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_spell_of_late_commands_is_one_line_then_one_summary_per_interval(caplog):
    clock = _Clock()
    late = SpellLog("late commands", interval_s=5.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="streams.spell_log"):
        late.note("late reject command for part-1 on line-1", 210.0)  # the first of a spell: at once, by name
        for i in range(2, 300):
            clock.now += 0.01
            late.note(f"late review command for part-{i} on line-1", 200.0 + (500.0 if i == 150 else 0.0))
        assert len(caplog.records) == 1 and "part-1" in caplog.messages[0]
        clock.now = 105.5
        # The interval is over: the held ones are summed up.
        late.note("late reject command for part-300 on line-1", 220.0)
        assert len(caplog.records) == 2
        assert "299 more late commands" in caplog.messages[1] and "part-150" in caplog.messages[1]
        assert "700 ms" in caplog.messages[1]
        clock.now += 1.0
        late.note("late reject command for part-301 on line-1", 220.0)
        assert late.flush() == 1  # the tail of a spell is logged by the worker's timer
        assert len(caplog.records) == 3 and "1 more late commands" in caplog.messages[2]
        assert late.flush() == 0 and len(caplog.records) == 3
        clock.now += 60.0
        late.note("late reject command for part-400 on line-2", 300.0)  # a new spell starts with a line of its own
        assert len(caplog.records) == 4 and "part-400 on line-2" in caplog.messages[3]


def test_a_flush_only_if_due_waits_for_the_interval_since_the_last_line(caplog):
    clock = _Clock()
    late = SpellLog("late frames", interval_s=5.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="streams.spell_log"):
        late.note("frame f-1 not in Kafka by its gate deadline", 3.0)
        clock.now += 1.0
        late.note("frame f-2 not in Kafka by its gate deadline", 9.0)
        assert late.flush(only_if_due=True) == 0 and len(caplog.records) == 1
        clock.now += 4.5
        assert late.flush(only_if_due=True) == 1
        assert "1 more late frames in the last 6 s" in caplog.messages[1] and "f-2" in caplog.messages[1]
        assert late.flush(only_if_due=True) == 0 and late.flush() == 0


def test_a_spell_of_failures_without_deadlines_names_the_first_and_then_the_last(caplog):
    clock = _Clock()
    failed = SpellLog("frames not delivered", interval_s=5.0, clock=clock, level=logging.ERROR)
    with caplog.at_level(logging.ERROR, logger="streams.spell_log"):
        for i in range(1, 51):
            failed.note(f"frame f-{i} not delivered: Local: Message timed out")
        assert failed.flush() == 49
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.ERROR]
    assert caplog.messages[0] == "frame f-1 not delivered: Local: Message timed out"
    assert caplog.messages[1] == (
        "49 more frames not delivered in the last 0 s; the last of them: frame f-50 not delivered: Local: Message "
        "timed out"
    )


def test_a_stopping_process_logs_what_every_spell_log_still_holds(caplog):
    clock = _Clock()
    commands = SpellLog("late commands", interval_s=5.0, clock=clock)
    counts = SpellLog("line counts too late for their stats window", interval_s=5.0, clock=clock)
    quiet = SpellLog("frames not delivered", interval_s=5.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="streams.spell_log"):
        for i in range(3):
            commands.note(f"late reject command for part-{i} on line-1", 150.0)
        counts.note("2 frames of line line-1 left out of the 10s stats window")
        counts.note("4 frames of line line-2 left out of the 10s stats window")
        assert len(caplog.records) == 2  # the first of each spell; 2 + 1 held back
        assert flush_every_spell_log() >= 3  # >=: spell logs of other tests may still be alive
    held = caplog.messages[2:]
    assert any("2 more late commands" in m and "part-2" in m for m in held), held
    assert any("1 more line counts too late" in m and "line-2" in m for m in held), held
    assert quiet.flush() == 0 and commands.flush() == 0 and counts.flush() == 0
