"""A deliberately naive listing: filter everything, then roll up. The oracle for tests."""

from __future__ import annotations

from common.listingdb import ListingParams, Subdir


def sorted_keys(names: list[str]) -> list[bytes]:
    return sorted({n.encode() for n in names})


def reference_listing(
    names: list[str], p: ListingParams, keys: list[bytes] | None = None
) -> list[str | Subdir]:
    """`keys` may pass sorted_keys(names) precomputed, for big inputs."""
    prefix, delim = p.prefix, p.delimiter
    if p.path is not None:
        prefix = p.path.rstrip("/") + "/" if p.path else ""
        delim = "/"
    pool = keys if keys is not None else sorted_keys(names)
    marker, end, bprefix = p.marker.encode(), p.end_marker.encode(), prefix.encode()
    if p.reverse:
        picked = [k for k in pool if (not marker or k < marker) and k > end]
        picked.reverse()
    else:
        picked = [k for k in pool if k > marker and (not end or k < end)]
    chosen = [k.decode() for k in picked if k.startswith(bprefix)]
    out: list[str | Subdir] = []
    seen: set[str] = set()
    for n in chosen:
        cut = n.find(delim, len(prefix)) if delim else -1
        if cut >= 0:
            sub = n[: cut + len(delim)]
            if p.path is not None:
                if n == sub:
                    out.append(n)
                continue
            if sub not in seen:
                seen.add(sub)
                if sub != p.marker:
                    out.append(Subdir(sub))
            continue
        out.append(n)
    return out[: max(p.limit, 0)]
