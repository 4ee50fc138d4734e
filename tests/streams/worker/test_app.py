import pytest

from streams.settings import Settings
from streams.worker.app import check_pipeline_limits


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_batch": 0}, "max_batch must be at least 1"),
        ({"max_wait_s": 0.0}, "max_wait_s must be above 0"),
        ({"max_batches_in_flight": 0}, "max_batches_in_flight must be at least 1"),
    ],
)
def test_batch_limits_the_agent_cannot_work_with_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        check_pipeline_limits(Settings().replace(**change))
    check_pipeline_limits(Settings())  # the defaults pass
