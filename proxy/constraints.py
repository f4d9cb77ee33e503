"""Swift's request constraints: name lengths, metadata limits, object size.

The values are Swift's defaults so clients and test suites that read ``/info`` see what they
expect (the listing limits are configured: ProxyConfig). Each check returns None when fine,
or (status, message) for the client.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["LIMITS", "check_metadata", "check_name", "check_object_put"]

LIMITS: dict[str, int] = {
    "max_file_size": 5 * 1024**3 + 2,
    "max_meta_name_length": 128,
    "max_meta_value_length": 256,
    "max_meta_count": 90,
    "max_meta_overall_size": 4096,
    "max_header_size": 8192,
    "max_object_name_length": 1024,
    "max_account_name_length": 256,
    "max_container_name_length": 256,
    "extra_header_count": 0,
}

Problem = tuple[int, str] | None


def check_name(kind: str, name: str) -> Problem:
    """Account, container or object name: UTF-8, no NUL, within the length limit."""
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        return 412, f"Invalid UTF8 or contains NULL in {kind} name"
    if "\x00" in name:
        return 412, f"Invalid UTF8 or contains NULL in {kind} name"
    limit = LIMITS[f"max_{kind}_name_length"]
    if len(raw) > limit:
        return 400, f"{kind.capitalize()} name length of {len(raw)} longer than {limit}"
    if kind == "container" and "/" in name:
        return 400, "Container name cannot contain '/'"
    if not raw:
        return 400, f"{kind.capitalize()} name cannot be empty"
    return None


def check_metadata(headers: Mapping[str, str], target: str) -> Problem:
    """Swift's limits on X-<target>-Meta-* headers."""
    prefix = f"x-{target}-meta-"
    count = 0
    size = 0
    for key, value in headers.items():
        lk = key.lower()
        if not lk.startswith(prefix):
            continue
        name = lk[len(prefix) :]
        if not name:
            return 400, "Metadata name cannot be empty"
        count += 1
        size += len(name) + len(value.encode("utf-8", "surrogateescape"))
        if len(name) > LIMITS["max_meta_name_length"]:
            return 400, f"Metadata name too long: {key}"
        if len(value.encode("utf-8", "surrogateescape")) > LIMITS["max_meta_value_length"]:
            return 400, f"Metadata value longer than {LIMITS['max_meta_value_length']}: {key}"
        if count > LIMITS["max_meta_count"]:
            return 400, f"Too many metadata items; max {LIMITS['max_meta_count']}"
        if size > LIMITS["max_meta_overall_size"]:
            return 400, f"Total metadata too large; max {LIMITS['max_meta_overall_size']}"
    return None


def check_object_put(headers: Mapping[str, str], content_length: int | None) -> Problem:
    if content_length is not None and content_length > LIMITS["max_file_size"]:
        return 413, "Your request is too large."
    te = headers.get("Transfer-Encoding", "").lower()
    if content_length is None and te != "chunked" and "X-Copy-From" not in headers:
        return 411, "Missing Content-Length header."
    if te and te != "chunked":
        return 501, "Not Implemented"
    return check_metadata(headers, "object")
