"""Safe parsers for the XML request bodies S3 clients send; MalformedXML on anything wrong.

The parser is expat driven directly: a document type declaration (and so any entity
declaration: no billion laughs, no external entities) is refused outright, depth and
element count are capped, and the caller passes a byte cap. Namespace prefixes are dropped,
so `<Delete xmlns="...">` and `<s3:Delete>` read the same. Only the tags each body defines
are looked at; unknown ones are ignored, as S3 does for forward compatibility.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.parsers import expat

from proxy.s3.errors import S3Error

__all__ = [
    "DELETE_KEYS_MAX",
    "PARTS_MAX",
    "AclBody",
    "Node",
    "parse_access_control_policy",
    "parse_complete_multipart_upload",
    "parse_create_bucket",
    "parse_delete",
    "parse_tagging",
    "parse_versioning",
    "parse_xml",
]

BODY_BYTES_MAX = 2 * 1024 * 1024
DEPTH_MAX = 16
ELEMENTS_MAX = 60_000
DELETE_KEYS_MAX = 1000
PARTS_MAX = 10_000
KEY_BYTES_MAX = 1024


@dataclass(slots=True)
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def find(self, tag: str) -> Node | None:
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def find_all(self, tag: str) -> list[Node]:
        return [c for c in self.children if c.tag == tag]

    def text_of(self, tag: str) -> str | None:
        child = self.find(tag)
        return None if child is None else child.text


def _local(name: str) -> str:
    return name.rpartition(":")[2]


class _Builder:
    def __init__(self) -> None:
        self.root: Node | None = None
        self.stack: list[Node] = []
        self.count = 0

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self.count += 1
        if self.count > ELEMENTS_MAX or len(self.stack) >= DEPTH_MAX:
            raise S3Error("MalformedXML")
        node = Node(_local(name), {_local(k): v for k, v in attrs.items()})
        if self.stack:
            self.stack[-1].children.append(node)
        else:
            self.root = node
        self.stack.append(node)

    def end(self, _name: str) -> None:
        self.stack.pop()

    def chars(self, data: str) -> None:
        if self.stack:
            self.stack[-1].text_parts.append(data)


def _refuse(*_args: object) -> None:
    raise S3Error("MalformedXML")


def _refuse_external(
    _context: str, _base: str | None, _system_id: str | None, _public_id: str | None
) -> int:
    raise S3Error("MalformedXML")


def parse_xml(body: bytes, *, bytes_max: int = BODY_BYTES_MAX) -> Node:
    """Parse a request body into a Node tree; MalformedXML if unsafe or ill-formed."""
    if len(body) > bytes_max:
        raise S3Error("MalformedXML", "The XML you provided was larger than allowed.")
    builder = _Builder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse_external
    parser.ProcessingInstructionHandler = _refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.chars
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise S3Error("MalformedXML") from exc
    if builder.root is None:
        raise S3Error("MalformedXML")
    return builder.root


def _root(body: bytes, tag: str, bytes_max: int = BODY_BYTES_MAX) -> Node:
    root = parse_xml(body, bytes_max=bytes_max)
    if root.tag != tag:
        raise S3Error("MalformedXML")
    return root


# ---- bodies -------------------------------------------------------------------------------


def parse_create_bucket(body: bytes) -> str | None:
    """CreateBucketConfiguration -> LocationConstraint (None for an empty body)."""
    if not body.strip():
        return None
    root = _root(body, "CreateBucketConfiguration", 64 * 1024)
    constraint = root.text_of("LocationConstraint")
    return constraint.strip() if constraint is not None else None


def parse_delete(body: bytes) -> tuple[bool, list[tuple[str, str | None]]]:
    """Delete -> (quiet, [(key, version id or None)]); 1..1000 objects."""
    root = _root(body, "Delete")
    quiet_text = (root.text_of("Quiet") or "false").strip().lower()
    if quiet_text not in ("true", "false"):
        raise S3Error("MalformedXML")
    objects: list[tuple[str, str | None]] = []
    for node in root.find_all("Object"):
        key = node.text_of("Key")
        if key is None or not key:
            raise S3Error("MalformedXML")
        if len(key.encode("utf-8")) > KEY_BYTES_MAX:
            raise S3Error("KeyTooLongError")
        version = node.text_of("VersionId")
        objects.append((key, version.strip() if version is not None else None))
    if not objects or len(objects) > DELETE_KEYS_MAX:
        raise S3Error("MalformedXML")
    return quiet_text == "true", objects


def parse_complete_multipart_upload(body: bytes) -> list[tuple[int, str]]:
    """CompleteMultipartUpload -> [(part number, etag without quotes)] in the given order.

    Order and duplicates are left for `multipart.validate_completion` to judge, so the
    client gets InvalidPartOrder rather than MalformedXML.
    """
    root = _root(body, "CompleteMultipartUpload", 4 * BODY_BYTES_MAX)
    parts: list[tuple[int, str]] = []
    for node in root.find_all("Part"):
        number = (node.text_of("PartNumber") or "").strip()
        etag = node.text_of("ETag")
        if not number.isdigit() or len(number) > 5 or etag is None:
            raise S3Error("MalformedXML")
        parts.append((int(number), etag.strip().strip('"')))
    if not parts:
        raise S3Error(
            "MalformedXML", "The XML you provided was not well-formed: it lists no parts."
        )
    if len(parts) > PARTS_MAX:
        raise S3Error("InvalidArgument", f"Part count must be at most {PARTS_MAX}.")
    return parts


@dataclass(frozen=True, slots=True)
class AclBody:
    owner_id: str | None
    # (grantee type, id or uri, permission)
    grants: tuple[tuple[str, str, str], ...]


def parse_access_control_policy(body: bytes) -> AclBody:
    root = parse_xml(body, bytes_max=64 * 1024)
    if root.tag != "AccessControlPolicy":
        raise S3Error("MalformedACLError")
    owner = root.find("Owner")
    owner_id = owner.text_of("ID") if owner is not None else None
    acl = root.find("AccessControlList")
    if acl is None:
        raise S3Error("MalformedACLError")
    grants = []
    for grant in acl.find_all("Grant"):
        grantee = grant.find("Grantee")
        permission = (grant.text_of("Permission") or "").strip()
        if grantee is None or not permission:
            raise S3Error("MalformedACLError")
        kind = grantee.attrs.get("type", "")
        if kind == "CanonicalUser":
            ident = grantee.text_of("ID")
        elif kind == "Group":
            ident = grantee.text_of("URI")
        else:
            raise S3Error("MalformedACLError")
        if not ident:
            raise S3Error("MalformedACLError")
        grants.append((kind, ident.strip(), permission))
    return AclBody(owner_id.strip() if owner_id else None, tuple(grants))


def parse_versioning(body: bytes) -> str:
    """VersioningConfiguration -> 'Enabled' or 'Suspended'."""
    root = _root(body, "VersioningConfiguration", 64 * 1024)
    status = (root.text_of("Status") or "").strip()
    if status not in ("Enabled", "Suspended"):
        raise S3Error("MalformedXML")
    return status


def parse_tagging(body: bytes, *, tags_max: int = 10) -> list[tuple[str, str]]:
    """Tagging -> [(key, value)]: at most `tags_max` (10 for objects, 50 for buckets),
    unique keys, keys of 1..128 and values of 0..256 characters."""
    root = _root(body, "Tagging", 64 * 1024)
    tag_set = root.find("TagSet")
    if tag_set is None:
        raise S3Error("MalformedXML")
    tags: list[tuple[str, str]] = []
    for tag in tag_set.find_all("Tag"):
        key, value = tag.text_of("Key"), tag.text_of("Value")
        if key is None or value is None:
            raise S3Error("MalformedXML")
        if not 1 <= len(key) <= 128 or len(value) > 256:
            raise S3Error("InvalidTag", "The TagKey or TagValue you have provided is invalid")
        tags.append((key, value))
    if len(tags) > tags_max:
        raise S3Error("InvalidTag", f"Object tags cannot be greater than {tags_max}")
    if len({k for k, _ in tags}) != len(tags):
        raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
    return tags
