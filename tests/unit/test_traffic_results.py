"""harness.traffic's reading of results: what counts as failed."""

from harness.traffic import Result, failed, summary


def test_no_answer_and_non_2xx_are_failed_2xx_are_not():
    results = [
        Result(200, 0.01, "ok"),
        Result(204, 0.01, ""),  # an app's health route may answer 204
        Result(None, 5.0, "ConnectionResetError"),  # no HTTP answer at all
        Result(502, 0.02, "bad gateway"),
        Result(301, 0.01, ""),
    ]
    assert [r.status for r in failed(results)] == [None, 502, 301]
    assert summary(results) == "sent 5 / failed 3 / max latency 5.00 s"
