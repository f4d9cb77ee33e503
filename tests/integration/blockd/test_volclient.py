"""The `cairn volume` CLI against a running blockd (memory store) on loopback."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from blockd.volclient import parse_size, run_volume_cli
from tests.integration.blockd.test_api import service

pytestmark = pytest.mark.integration


async def cli(svc, argv, token="tok-alice"):
    out, err = io.StringIO(), io.StringIO()
    endpoint = f"{svc.api_url}/v3/AUTH_alice"
    code = await asyncio.to_thread(run_volume_cli, argv, endpoint, token, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_create_show_list_delete_with_json():
    async def run():
        async with service() as (svc, _http):
            code, out, err = await cli(svc, ["create", "db1", "--size", "10G", "--json"])
            assert code == 0, err
            vol = json.loads(out)
            for key in ("name", "size_bytes", "iqn", "portal", "lun", "chap_user", "chap_secret"):
                assert key in vol
            assert vol["name"] == "db1"
            assert vol["size_bytes"] == 10 << 30
            assert vol["lun"] == 0
            assert vol["url"] == (
                f"iscsi://{vol['chap_user']}%{vol['chap_secret']}@{vol['portal']}/{vol['iqn']}/0"
            )

            code, out, _ = await cli(svc, ["show", "db1", "--json"])
            assert code == 0
            assert json.loads(out) == vol
            code, out, _ = await cli(svc, ["show", vol["id"]])
            assert code == 0
            assert vol["iqn"] in out
            assert vol["chap_secret"] in out

            await cli(svc, ["create", "small", "--size", "100M"])
            code, out, _ = await cli(svc, ["list"])
            assert code == 0
            lines = out.splitlines()
            assert lines[0].split() == ["ID", "Name", "Size", "Status", "IQN"]
            assert any("db1" in line and "10G" in line for line in lines)
            assert any("small" in line and "100M" in line for line in lines)

            code, _, _ = await cli(svc, ["delete", "db1"])
            assert code == 0
            code, out, _ = await cli(svc, ["list", "--json"])
            assert [v["name"] for v in json.loads(out)] == ["small"]

    asyncio.run(run())


def test_errors_are_messages_not_tracebacks():
    async def run():
        async with service() as (svc, _http):
            code, _, err = await cli(svc, ["show", "missing"])
            assert code == 1
            assert "no volume" in err
            code, _, err = await cli(svc, ["list"], token="bad")
            assert code == 1
            assert "HTTP 401" in err
            code, _, err = await cli(svc, ["create", "x", "--size", "ten"])
            assert code == 2
            assert "bad size" in err
            assert (await cli(svc, ["create", "x", "--size", "100"]))[0] == 0  # thin: free
            code, _, err = await cli(svc, ["create", "huge", "--size", "1T"])
            assert code == 1
            assert "larger chunk size" in err  # 1 TiB of 64 KiB chunks is too many chunks
            code, _, err = await cli(svc, ["create", "x", "--size", "1G"])
            assert code == 1
            assert "already exists" in err
            code, _, _ = await cli(svc, ["frobnicate"])
            assert code == 2

    asyncio.run(run())


@pytest.mark.parametrize(
    ("text", "size"),
    [("10G", 10 << 30), ("512M", 512 << 20), ("1T", 1 << 40), ("4", 4 << 30), ("64KiB", 64 << 10)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_parse_size_rejects_garbage():
    with pytest.raises(ValueError, match="bad size"):
        parse_size("1.5G")
