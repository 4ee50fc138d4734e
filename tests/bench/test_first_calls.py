import json

from bench import first_calls


def test_first_calls_times_every_size_on_the_loading_and_a_new_thread_and_after_idle(skeleton_model, tmp_path):
    args = first_calls.get_args_parser().parse_args(
        ["--model", str(skeleton_model), "--max-batch", "3", "--repeats", "2", "--idle-gaps", "0,0.05", "--out",
         str(tmp_path)]
    )  # fmt: skip
    result = first_calls.main(args)
    assert [r["batch"] for r in result["rows"]] == [1, 2, 3]
    for r in result["rows"]:
        assert len(r["first_ms"]) == result["concurrent_batches"] and r["later_ms"] > 0 and r["new_thread_ms"] > 0
        assert r["extra_ms"] == max(r["first_ms"]) - r["later_ms"]
    assert [(r["idle_s"], len(r["calls"])) for r in result["after_idle"]] == [(0.0, 2), (0.05, 2)]
    assert all(c["sm_clock_mhz_before"] is None for r in result["after_idle"] for c in r["calls"])  # CPU: no clock
    (written,) = tmp_path.glob("first_calls-*.json")
    assert json.loads(written.read_text())["rows"] == result["rows"]
