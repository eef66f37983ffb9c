"""`make bench` reads wrk's report right, errors included: a parser that misses errors would
report a broken stack as healthy."""

import pytest

from harness import bench
from harness.wrk import parse_wrk

# wrk 4.1.0 --latency, as printed by Debian's package (a run with errors)
WRK_WITH_ERRORS = """\
Running 5s test @ http://127.0.0.1:8082/
  2 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    35.41ms   21.02ms   1.99s    90.12%
    Req/Sec     3.65k   412.33     4.41k    71.00%
  Latency Distribution
     50%  850.00us
     75%   38.01ms
     90%   55.40ms
     99%    1.21s
  36337 requests in 5.01s, 7.27MB read
  Socket errors: connect 0, read 12, write 0, timeout 88
  Non-2xx or 3xx responses: 1503
Requests/sec:   7252.12
Transfer/sec:      1.45MB
"""


def test_parse_counts_requests_latency_and_errors():
    result = parse_wrk(WRK_WITH_ERRORS)
    assert result["requests"] == 36337
    assert result["rps"] == pytest.approx(7252.12)
    assert result["p50"] == pytest.approx(0.85)  # us -> ms
    assert result["p90"] == pytest.approx(55.4)
    assert result["p99"] == pytest.approx(1210)  # s -> ms
    assert result["non2xx"] == 1503
    assert result["errors"] == 100
    assert result["socket_errors"] == {"connect": 0, "read": 12, "write": 0, "timeout": 88}


def test_a_clean_run_has_zero_errors():
    clean = "\n".join(
        line
        for line in WRK_WITH_ERRORS.splitlines()
        if "errors" not in line and "Non-2xx" not in line
    )
    result = parse_wrk(clean)
    assert (result["non2xx"], result["errors"]) == (0, 0)


def test_output_that_is_not_a_wrk_report_is_an_error_not_zeros():
    with pytest.raises(ValueError, match="no 50% latency line|no request count"):
        parse_wrk("unable to connect to 127.0.0.1:8082 Connection refused\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stacks", "nginx-uwsgi-sockt"], "not an nginx stack: \\['nginx-uwsgi-sockt'\\]"),
        (["--stacks", "flask-dev"], "not an nginx stack"),
        (["--connections", "64,lots"], "CONNECTIONS='64,lots': give numbers"),
        (["--duration", "0"], "must be at least 1"),
    ],
)
def test_bad_options_say_what_to_fix(argv, message):
    with pytest.raises(SystemExit, match=message):
        bench.main(argv)


def test_a_dirty_tree_is_refused_unless_allowed():
    assert bench.tree_state("0db7609", allow_dirty=False) == "0db7609"
    with pytest.raises(SystemExit, match=r"uncommitted changes \(0db7609-dirty\).*--allow-dirty"):
        bench.tree_state("0db7609-dirty", allow_dirty=False)
    assert "uncommitted" in bench.tree_state("0db7609-dirty", allow_dirty=True)


# h2load (nghttp2 1.52, Debian's nghttp2-client) against an HTTPS port, with failures (two
# long lines cut at [...])
H2LOAD_WITH_FAILURES = """\
starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and [...]
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 5.00s, 4373.20 req/s, 1.53MB/s
requests: 21866 total, 22026 started, 21866 done, 21800 succeeded, 66 failed, 26 errored, 0 timeout
status codes: 21800 2xx, 0 3xx, 12 4xx, 28 5xx
traffic: 7.63MB (8001234) total, 301.51KB (308745) headers (space savings 92.10%), [...]
                     min         max         mean         sd        +/- sd
time for request:      812us    155.02ms     36.01ms     12.31ms    71.23%
time for connect:     3.11ms     14.92ms      8.74ms      3.53ms    62.50%
time to 1st byte:    15.33ms     40.12ms     26.01ms      7.88ms    56.25%
req/s           :     268.12      279.33      273.32        3.11    62.50%
"""


def test_h2load_parse_counts_failures_and_the_protocol():
    from harness.h2load import parse_h2load

    result = parse_h2load(H2LOAD_WITH_FAILURES)
    assert result["rps"] == pytest.approx(4373.20) and result["seconds"] == pytest.approx(5.0)
    assert result["requests"] == 21800  # succeeded, not merely done
    assert result["failed"] == 66 and result["non2xx"] == 40
    assert result["protocol"] == "h2"
    assert result["max_ms"] == pytest.approx(155.02) and result["mean_ms"] == pytest.approx(36.01)


def test_h2load_output_without_counts_is_an_error_not_zeros():
    from harness.h2load import parse_h2load

    with pytest.raises(ValueError, match="no request counts"):
        parse_h2load("connect: Connection refused\nNo protocol negotiated. Aborted\n")
