"""The batch watchdog: a batch not delivered and acked, or frames left in the agent's queue, for too long."""

from streams.worker.batch_watch import BatchWatchdog
from streams.worker.pipeline import BatchInFlight


class Clock:
    def __init__(self) -> None:
        self.now = -1.0  # before the first check

    def __call__(self) -> float:
        return self.now


def observe(dog, clock, t, *, oldest=None, waiting=False, room=True, taken=0, paused=False):
    """The same observation once a second up to ``t`` (the worker's 1-s timer), or only at ``t`` after a pause."""
    start = t if paused else int(clock.now) + 1
    for tick in range(start, t + 1):
        clock.now = tick
        stuck = dog.stuck(oldest=oldest, frames_waiting=waiting, room=room, batches_taken=taken)
    return stuck


def test_a_batch_in_flight_past_the_limit_is_reported_with_its_step():
    clock = Clock()
    dog = BatchWatchdog(limit_s=180, clock=clock)
    batch = BatchInFlight(frames=8, taken_at=10.0, step="delivery")
    assert observe(dog, clock, 190, oldest=batch) is None  # 180 s: not past the limit
    stuck = observe(dog, clock, 191, oldest=batch)
    assert stuck == "a batch of 8 frames was taken 181 s ago and is not yet delivered and acked (step: delivery)"


def test_batches_that_keep_moving_are_never_reported():
    """Each check sees a younger oldest batch: a busy worker, however long it stays busy."""
    clock = Clock()
    dog = BatchWatchdog(limit_s=10, clock=clock)
    for t in range(0, 600, 5):
        assert observe(dog, clock, t, oldest=BatchInFlight(8, t - 1.0), waiting=True, taken=t) is None


def test_frames_waiting_with_room_and_no_batch_taken_are_reported():
    clock = Clock()
    dog = BatchWatchdog(limit_s=60, clock=clock)
    assert observe(dog, clock, 0, waiting=True, taken=3) is None  # the count starts here
    assert observe(dog, clock, 60, waiting=True, taken=3) is None
    stuck = observe(dog, clock, 61, waiting=True, taken=3)
    assert stuck == "frames have waited in the agent's queue for 61 s with room in the pipeline and no batch taken"


def test_a_batch_taken_restarts_the_wait():
    clock = Clock()
    dog = BatchWatchdog(limit_s=60, clock=clock)
    observe(dog, clock, 49, waiting=True, taken=3)
    assert observe(dog, clock, 50, waiting=True, taken=4) is None  # one taken at 50: the count restarts there
    assert observe(dog, clock, 110, waiting=True, taken=4) is None
    assert observe(dog, clock, 111, waiting=True, taken=4) is not None


def test_an_empty_queue_or_a_full_pipeline_restarts_the_wait():
    """An empty queue is a worker waiting for input; a full pipeline is backpressure, and its oldest batch is the one
    watched."""
    clock = Clock()
    dog = BatchWatchdog(limit_s=60, clock=clock)
    observe(dog, clock, 49, waiting=True)
    assert observe(dog, clock, 50, waiting=False) is None
    assert observe(dog, clock, 55, waiting=True) is None  # from 51
    assert observe(dog, clock, 111, waiting=True, room=False) is None  # 56-111: full
    assert observe(dog, clock, 172, waiting=True) is None  # from 112
    assert observe(dog, clock, 173, waiting=True) is not None


def test_a_pause_of_the_whole_process_is_not_taken_for_stuck_batches():
    """After SIGSTOP or a paused container, the first check may come before the agent has taken another batch: the
    counts start again from the resume."""
    clock = Clock()
    dog = BatchWatchdog(limit_s=180, clock=clock)
    for t in range(10):  # a busy, healthy worker: one check a second
        assert observe(dog, clock, t, oldest=BatchInFlight(4, t - 0.2), waiting=True, taken=t) is None
    batch = BatchInFlight(4, 8.8)
    assert observe(dog, clock, 209, oldest=batch, waiting=True, taken=9, paused=True) is None  # for 200 s
    assert observe(dog, clock, 389, oldest=batch, waiting=True, taken=9) is None
    # Still stuck a whole limit after the resume: reported, with its age since it was taken.
    stuck = observe(dog, clock, 390, oldest=batch, waiting=True, taken=9)
    assert stuck == "a batch of 4 frames was taken 381 s ago and is not yet delivered and acked (step: inspection)"
