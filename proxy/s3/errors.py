"""S3 errors: one exception type, one table of codes, one XML body.

Every failure on the S3 front becomes an `S3Error`; the front renders it with
`S3Error.to_xml(request_id)` and `S3Error.status`. The table below is the single place
that says which HTTP status each code carries, so no handler invents a status.
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.sax.saxutils import escape

__all__ = ["ERRORS", "S3Error", "invalid_access_key"]

# code -> (HTTP status, default message). Messages follow the wording S3 clients show.
ERRORS: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (
        400,
        "Query-string authentication requires the X-Amz-Algorithm, X-Amz-Credential, "
        "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
    ),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (
        409,
        "The requested bucket name is not available. The bucket namespace is shared by all "
        "users of the system. Please select a different name and try again.",
    ),
    "BucketAlreadyOwnedByYou": (
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (
        400,
        "Your proposed upload is smaller than the minimum allowed object size.",
    ),
    "IncompleteBody": (
        400,
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
    ),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (
        403,
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidChunkSizeError": (
        400,
        "Only the last chunk is allowed to have a size less than 8192 bytes",
    ),
    "InvalidDigest": (400, "The Content-MD5 you specified was invalid."),
    "InvalidPart": (
        400,
        "One or more of the specified parts could not be found. The part might not have been "
        "uploaded, or the specified entity tag might not have matched the part's entity tag.",
    ),
    "InvalidPartOrder": (
        400,
        "The list of parts was not in ascending order. The parts list must be specified in "
        "order by part number.",
    ),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidStorageClass": (400, "The storage class you specified is not valid"),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidBucketState": (409, "The request is not valid with the current state of the bucket."),
    "MissingRequestBodyError": (400, "Request Body is empty"),
    "NoSuchTagSet": (404, "The TagSet does not exist"),
    "OperationAborted": (
        409,
        "A conflicting conditional operation is currently in progress against this resource. "
        "Please try again.",
    ),
    "RequestTimeout": (
        400,
        "Your socket connection to the server was not read from or written to within the "
        "timeout period.",
    ),
    "TooManyBuckets": (400, "You have attempted to create more buckets than allowed."),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedACLError": (
        400,
        "The XML you provided was not well-formed or did not validate against our published schema",
    ),
    "MalformedTrailerError": (
        400,
        "The request contained trailing data that was not well-formed or did not conform to "
        "our published schema.",
    ),
    "MalformedXML": (
        400,
        "The XML you provided was not well-formed or did not validate against our published schema",
    ),
    "MaxMessageLengthExceeded": (400, "Your request was too big."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingSecurityHeader": (400, "Your request is missing a required header."),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may "
        "have been aborted or completed.",
    ),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented"),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "RequestTimeTooSkewed": (
        403,
        "The difference between the request time and the current time is too large.",
    ),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    "SlowDown": (503, "Please reduce your request rate."),
    "XAmzContentSHA256Mismatch": (
        400,
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    ),
}


class S3Error(Exception):
    """An S3 failure with its code; status and default message come from `ERRORS`.

    `extra` holds additional child elements of <Error> (e.g. BucketName, StringToSign),
    in order. Unknown codes are a programming error and fail loudly at construction.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        resource: str = "",
        extra: Iterable[tuple[str, str]] = (),
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        assert code in ERRORS, f"unknown S3 error code {code!r}"
        self.code = code
        self.status: int = ERRORS[code][0]
        self.message: str = message if message is not None else ERRORS[code][1]
        self.resource = resource
        self.extra: tuple[tuple[str, str], ...] = tuple(extra)
        # Response headers that belong with this error (e.g. x-amz-bucket-region).
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)
        super().__init__(f"{code}: {self.message}")

    def with_resource(self, resource: str) -> S3Error:
        """Return this error with `resource` filled in if it was empty (in place)."""
        if not self.resource:
            self.resource = resource
        return self

    def to_xml(self, request_id: str) -> bytes:
        """The S3 error document for this error."""
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
            f"<Code>{escape(self.code)}</Code>",
            f"<Message>{escape(self.message)}</Message>",
        ]
        parts.extend(f"<{name}>{escape(value)}</{name}>" for name, value in self.extra)
        if self.resource:
            parts.append(f"<Resource>{escape(self.resource)}</Resource>")
        parts.append(f"<RequestId>{escape(request_id)}</RequestId>")
        parts.append("</Error>")
        return "".join(parts).encode("utf-8")


def invalid_access_key(access_key: str) -> S3Error:
    """The error for an access key the credential lookup does not know."""
    return S3Error("InvalidAccessKeyId", extra=[("AWSAccessKeyId", access_key)])
