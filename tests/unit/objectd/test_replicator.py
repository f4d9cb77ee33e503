"""The replicator decides what to push from fresh hashes on both sides.

Real object servers on 127.0.0.1 (tests/integration/objectd/replication_cluster.py): the
decision needs a peer's REPLICATE answer, and the point is what is on disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.clock import ManualClock
from common.timestamps import Timestamp
from objectd.hashes import HASHES_CACHE, decode_cache, get_hashes
from tests.integration.objectd.conftest import run
from tests.integration.objectd.replication_cluster import cluster

pytestmark = pytest.mark.integration


def test_a_pusher_rechecks_its_own_stale_suffix_before_pushing(tmp_path: Path) -> None:
    clock = ManualClock()

    async def go() -> None:
        async with cluster(tmp_path, clock) as c:
            part, prim, _ = c.placement("o1")
            ts = Timestamp.from_float(clock.time()).internal
            assert await c.put(prim[0], part, "o1", b"one", ts) == 201
            pusher = prim[0]
            layout = pusher.layout
            cached = get_hashes(layout, part, now_s=clock.time(), reclaim_age_s=86400.0)
            # Lost behind the server's back: the pusher's cache still claims the object.
            (data,) = layout.objects.rglob("*.data")
            data.unlink()
            stats = await c.replicator(pusher).run_once()
            assert stats.errors == 0, stats
            # The peers lack the suffix; our fresh listing lacks it too: nothing to push,
            # and the cache now says what the disk holds.
            assert stats.partitions_pushed == 0 and stats.objects_synced == 0
            raw = (layout.partition_dir(part) / HASHES_CACHE).read_bytes()
            assert cached and decode_cache(raw) == {}
            for n in prim[1:]:
                assert (await c.get(n, part, "o1"))[0] == 404

    run(go())
