"""The AWS CLI (`aws s3 ...`, `aws s3api ...`) against the S3 front on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.s3.frontserver import USERS, Front, serve_front

pytestmark = pytest.mark.integration
AWS = Path(sys.executable).with_name("aws")


@pytest.fixture(scope="module")
def front() -> Iterator[Front]:
    with serve_front() as f:
        yield f


def aws(front: Front, tmp_path: Path, *args: str, check: bool = True) -> str:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "test:tester",
        "AWS_SECRET_ACCESS_KEY": USERS["test:tester"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    out = subprocess.run(
        [str(AWS), "--endpoint-url", front.url, *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if check and out.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed: {out.stdout}\n{out.stderr}")
    return out.stdout + out.stderr


@pytest.mark.skipif(shutil.which(str(AWS)) is None, reason="the AWS CLI is not installed")
def test_aws_cli_workflow(front: Front, tmp_path: Path) -> None:
    big = tmp_path / "up" / "big.bin"
    big.parent.mkdir()
    data = os.urandom(1024 * 1024) * 20  # 20 MiB: the CLI uploads it in 8 MiB parts
    big.write_bytes(data)
    (tmp_path / "up" / "small.txt").write_text("small file\n")
    aws(front, tmp_path, "s3", "mb", "s3://cli-bucket")
    aws(front, tmp_path, "s3", "cp", str(big), "s3://cli-bucket/big.bin")
    head = json.loads(aws(front, tmp_path, "s3api", "head-object", "--bucket", "cli-bucket",
                          "--key", "big.bin"))  # fmt: skip
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    aws(front, tmp_path, "s3", "sync", str(tmp_path / "up"), "s3://cli-bucket/dir/")
    listing = aws(front, tmp_path, "s3", "ls", "--recursive", "s3://cli-bucket/")
    assert "dir/small.txt" in listing and "big.bin" in listing
    # A second sync finds nothing to do: sizes and times match what it uploaded.
    assert "upload:" not in aws(front, tmp_path, "s3", "sync", str(tmp_path / "up"),
                                "s3://cli-bucket/dir/")  # fmt: skip
    down = tmp_path / "down.bin"
    aws(front, tmp_path, "s3", "cp", "s3://cli-bucket/big.bin", str(down))
    assert hashlib.sha256(down.read_bytes()).digest() == hashlib.sha256(data).digest()
    aws(front, tmp_path, "s3", "rm", "--recursive", "s3://cli-bucket/")
    assert aws(front, tmp_path, "s3", "ls", "s3://cli-bucket/").strip() == ""
    aws(front, tmp_path, "s3", "rb", "s3://cli-bucket")
    missing = aws(front, tmp_path, "s3api", "head-bucket", "--bucket", "cli-bucket", check=False)
    assert "404" in missing
