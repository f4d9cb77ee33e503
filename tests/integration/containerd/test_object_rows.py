"""``POST /_object_rows`` on a real container server: per-row statuses and bad bodies."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import msgpack
import pytest

from common.clock import ManualClock
from common.rowupdates import (
    BODY_BYTES_MAX,
    CONTENT_TYPE,
    PATH,
    VERSION_HEADER,
    RowUpdate,
    decode_response,
    encode_request,
    encode_row,
)
from common.server import running_app
from containerd import client
from containerd.server import make_container_app
from tests.unit.containerd.test_server import make_conf

pytestmark = pytest.mark.integration

Scenario = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def run(root: Path, scenario: Scenario) -> None:
    conf = make_conf(root)

    async def main() -> None:
        app = await make_container_app(conf, clock=ManualClock())
        async with running_app(app) as url, aiohttp.ClientSession() as s:
            ts = {"X-Timestamp": "1700000000.00000"}
            assert (await client.direct_put_container(s, url, "sda", 1, "a", "c", ts))[0] == 201
            await scenario(s, url)

    asyncio.run(asyncio.wait_for(main(), 60))


def put_row(name: str, n: int, device: str = "sda", container: str = "c") -> RowUpdate:
    headers = {
        "X-Timestamp": f"{1_700_000_100 + n}.00000",
        "X-Size": str(n),
        "X-Content-Type": "text/plain",
        "X-Etag": f'"{n:032x}"',
    }
    return RowUpdate(device, 1, "a", container, name, "PUT", headers)


async def post(
    s: aiohttp.ClientSession, url: str, body: bytes
) -> tuple[int, dict[str, str], bytes]:
    data = io.BytesIO(body)  # (aiohttp warns about large bodies given as bytes)
    async with s.post(url + PATH, data=data, headers={"Content-Type": CONTENT_TYPE}) as r:
        return r.status, dict(r.headers), await r.read()


def test_each_row_gets_the_status_of_its_single_request(tmp_path: Path) -> None:
    rows = [
        put_row("o1", 1),
        put_row("on-missing-device", 2, device="sdz"),  # no such device: 507
        put_row("o3", 3),
        put_row("no-container", 4, container="nope"),  # 404
        RowUpdate("sda", 1, "a", "c", "no-size", "PUT", {"X-Timestamp": "1700000200.00000"}),
        RowUpdate("sda", 1, "a", "c", "bad-ts", "DELETE", {"X-Timestamp": "yesterday"}),
        RowUpdate("..", 1, "a", "c", "bad-device-name", "PUT", put_row("x", 5).headers),
        RowUpdate("sda", 1, "a", "c", "o1", "DELETE", {"X-Timestamp": "1700000300.00000"}),
        put_row("dir/o ü", 6),
    ]

    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        status, headers, body = await post(s, url, encode_request([encode_row(r) for r in rows]))
        assert (status, headers[VERSION_HEADER]) == (200, "1")
        assert headers["Content-Type"] == CONTENT_TYPE
        assert decode_response(body, len(rows)) == [201, 507, 201, 404, 400, 400, 400, 204, 201]
        st, _h, listed = await client.direct_get_container(s, url, "sda", 1, "a", "c")
        assert st == 200 and listed is not None
        got = {r["name"]: (r["bytes"], r["hash"]) for r in listed}
        assert got == {"o3": (3, f"{3:032x}"), "dir/o ü": (6, f"{6:032x}")}

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not msgpack at all \xc1\xc1",
        encode_request([encode_row(put_row("o", 1))])[:-3],  # truncated
        msgpack.packb({"v": 99, "rows": [1]}),
        msgpack.packb({"v": 1, "rows": [{"device": "sda"}]}),
        msgpack.packb({"v": 1, "rows": [msgpack.unpackb(encode_row(put_row("o", 1)))] * 257}),
    ],
)
def test_bad_bodies_are_400_in_text(tmp_path: Path, body: bytes) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        status, headers, text = await post(s, url, body)
        assert (status, headers[VERSION_HEADER]) == (400, "1")
        assert headers["Content-Type"].startswith("text/plain")
        assert text.endswith(b"\n") and len(text) < 300
        st, _h, listed = await client.direct_get_container(s, url, "sda", 1, "a", "c")
        assert (st, listed) == (200, [])  # nothing of it was stored

    run(tmp_path, scenario)


def test_too_large_body_is_413(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        status, headers, _text = await post(s, url, b"\x00" * (BODY_BYTES_MAX + 1))
        assert (status, headers[VERSION_HEADER]) == (413, "1")

    run(tmp_path, scenario)
