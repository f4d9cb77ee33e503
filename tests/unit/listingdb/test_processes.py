"""Several worker processes writing one device environment at once (LMDB's cross-process
writer lock): no update is lost and the totals stay exact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.listingdb import EnvOptions, acquire_env, release_env
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker

ROOT = Path(__file__).resolve().parents[3]
WRITER = """
import sys
from pathlib import Path
from common.listingdb import EnvOptions, acquire_env
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker, ObjectRow
env = acquire_env(Path(sys.argv[1]), EnvOptions(1 << 26, threads=1))
b = ContainerBroker(env, 1, "ab" * 16)
for i in range(100):
    assert b.put_row(ObjectRow(f"{sys.argv[2]}-{i:04d}", Timestamp.from_float(200 + i).internal, 3))
"""


def test_concurrent_writer_processes(tmp_path: Path) -> None:
    path = tmp_path / "containers.lmdb"
    env = acquire_env(path, EnvOptions(1 << 26, threads=1))
    try:
        b = ContainerBroker(env, 1, "ab" * 16)
        b.create_or_update("a", "c", Timestamp.from_float(100), {})
        procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{n}"], cwd=ROOT)
            for n in range(3)
        ]
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
        info = b.get_info()
        assert info is not None
        assert info.stats == {"object_count": 300, "bytes_used": 900}
        assert info.max_seq == 300
        assert len(b.rows_since(0, 10_000)) == 300
    finally:
        release_env(env)
