"""The request counter and latency histogram every server (the object server too) exports."""

from __future__ import annotations

from prometheus_client import generate_latest

from common.server import METRICS, make_app


def test_observe_counts_per_method_and_status_and_reuses_children() -> None:
    m = make_app("object-server")[METRICS]
    for _ in range(3):
        m.observe("object-server", "PUT", 201, 0.002)
    m.observe("object-server", "PUT", 507, 0.001)
    m.observe("object-server", "GET", 200, 0.5)
    text = generate_latest(m.registry).decode()
    assert (
        'cairn_http_requests_total{method="PUT",service="object-server",status="201"} 3.0' in text
    )
    assert (
        'cairn_http_requests_total{method="PUT",service="object-server",status="507"} 1.0' in text
    )
    assert 'cairn_http_request_seconds_count{method="PUT",service="object-server"} 4.0' in text
    assert (
        'cairn_http_request_seconds_bucket{le="1.0",method="GET",service="object-server"} 1.0'
        in text
    )
    # The same labelled child is handed out again, not looked up each time.
    assert m._request_children[("PUT", 201)] is m.requests.labels("object-server", "PUT", "201")
