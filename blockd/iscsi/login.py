"""The login phase of one connection (RFC 7143 6.3), sans-IO.

Feed :class:`LoginRequest` objects to :meth:`LoginMachine.feed`; it returns the Login Response
PDUs to send. When ``done`` is set the connection either enters full feature phase (``result``)
or must be closed (``failed``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from blockd.iscsi import messages as m
from blockd.iscsi.chap import ChapCredentials, ChapError, ChapTarget
from blockd.iscsi.negotiation import Negotiator, SessionParams, TargetLimits
from blockd.iscsi.pdu import Pdu
from blockd.iscsi.text import TEXT_BYTES_MAX, TextError, decode_text, encode_text

__all__ = [
    "LoginMachine",
    "LoginResult",
    "LoginStatus",
    "Portal",
    "TargetEntry",
]

STAGE_SECURITY = 0
STAGE_OPERATIONAL = 1
STAGE_FULL_FEATURE = 3
SECURITY_KEYS = frozenset({"AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"})


class LoginStatus:
    """Status-Class << 8 | Status-Detail of Login Responses (RFC 7143 11.13.5)."""

    SUCCESS = 0x0000
    INITIATOR_ERROR = 0x0200
    AUTH_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    OUT_OF_RESOURCES = 0x0302


@dataclass(frozen=True, slots=True)
class TargetEntry:
    """One exported target as login sees it."""

    iqn: str
    alias: str = ""
    chap: ChapCredentials | None = None
    mutual: ChapCredentials | None = None


@dataclass(frozen=True, slots=True)
class LoginResult:
    initiator_name: str
    isid: bytes
    tsih: int
    cid: int
    target: TargetEntry | None  # None for a discovery session
    params: SessionParams
    cmd_sn: int  # ExpCmdSN at the start of full feature phase
    stat_sn: int  # the next StatSN this connection sends


class Portal(Protocol):
    """What login needs from the target server: targets, discovery credentials, admission."""

    def find_target(self, iqn: str) -> TargetEntry | None: ...

    def discovery_credentials(self, user: str) -> ChapCredentials | None: ...

    def discovery_requires_chap(self) -> bool: ...

    def admit(self, result: LoginResult) -> tuple[int, int]:
        """Create or join the session: (LoginStatus, TSIH)."""
        ...


class LoginFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Auth:
    required: bool
    methods: tuple[str, ...]  # what we accept, e.g. ("CHAP",) or ("None",) or ("None", "CHAP")
    chap: ChapTarget
    state: str = "start"  # start -> chap_a -> chap_r -> done


@dataclass
class _First:
    isid: bytes
    tsih: int
    cid: int
    cmd_sn: int
    initiator_name: str
    target: TargetEntry | None


@dataclass
class LoginStep:
    pdus: list[Pdu] = field(default_factory=list)


class LoginMachine:
    """Target side of the login phase of one connection."""

    def __init__(
        self,
        portal: Portal,
        limits: TargetLimits,
        *,
        portal_group_tag: int = 1,
        queue_depth: int = 64,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._portal = portal
        self._limits = limits
        self._tpgt = portal_group_tag
        self._queue_depth = queue_depth
        self._random_bytes = random_bytes
        self._stage = STAGE_SECURITY
        self._first: _First | None = None
        self._auth: _Auth | None = None
        self._negotiator: Negotiator | None = None
        self._pending_text = b""
        self._sent_tpgt = False
        self._sent_mrdsl = False
        self._stat_sn = 0
        self.done = False
        self.failed = False
        self.failure_reason = ""
        self.result: LoginResult | None = None

    def feed(self, req: m.LoginRequest) -> list[Pdu]:
        """Handle one Login Request; return the responses to send."""
        assert not self.done, "login already finished"
        try:
            return self._feed(req)
        except LoginFailed as exc:
            self.done = True
            self.failed = True
            self.failure_reason = str(exc)
            return [self._response(req, transit=False, status=exc.status)]

    def _feed(self, req: m.LoginRequest) -> list[Pdu]:
        if self._first is None:
            self._stat_sn = req.exp_stat_sn
            if not req.version_min <= 0 <= req.version_max:
                raise LoginFailed(LoginStatus.UNSUPPORTED_VERSION, "unsupported version")
        elif req.isid != self._first.isid or req.cid != self._first.cid:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "ISID or CID changed during login")
        if len(self._pending_text) + len(req.data) > TEXT_BYTES_MAX:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "login text too long")
        self._pending_text += req.data
        if req.cont:
            return [self._response(req, transit=False, status=LoginStatus.SUCCESS)]
        text, self._pending_text = self._pending_text, b""
        try:
            keys = decode_text(text)
        except TextError as exc:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, str(exc)) from exc
        if self._first is None:
            self._start(req, dict(keys))
        return [self._stage_step(req, keys)]

    def _start(self, req: m.LoginRequest, keys: dict[str, str]) -> None:
        initiator = keys.get("InitiatorName")
        if not initiator:
            raise LoginFailed(LoginStatus.MISSING_PARAMETER, "InitiatorName missing")
        session_type = keys.get("SessionType", "Normal")
        if session_type not in ("Normal", "Discovery"):
            raise LoginFailed(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, "bad SessionType")
        discovery = session_type == "Discovery"
        target: TargetEntry | None = None
        if not discovery:
            name = keys.get("TargetName")
            if not name:
                raise LoginFailed(LoginStatus.MISSING_PARAMETER, "TargetName missing")
            target = self._portal.find_target(name)
            if target is None:
                raise LoginFailed(LoginStatus.NOT_FOUND, f"no target {name}")
        self._first = _First(req.isid, req.tsih, req.cid, req.cmd_sn, initiator, target)
        if req.csg == STAGE_OPERATIONAL:
            self._stage = STAGE_OPERATIONAL  # the initiator skipped the security stage
        self._negotiator = Negotiator(self._limits, discovery=discovery)
        self._auth = self._auth_for(target)

    def _auth_for(self, target: TargetEntry | None) -> _Auth:
        if target is not None:
            if target.chap is not None:
                creds = target.chap
                chap = ChapTarget(
                    lambda user: creds if user == creds.user else None,
                    target.mutual,
                    self._random_bytes,
                )
                return _Auth(True, ("CHAP",), chap)
            return _Auth(False, ("None",), ChapTarget(lambda _u: None, None, self._random_bytes))
        required = self._portal.discovery_requires_chap()
        chap = ChapTarget(self._portal.discovery_credentials, None, self._random_bytes)
        return _Auth(required, ("CHAP",) if required else ("None", "CHAP"), chap)

    def _stage_step(self, req: m.LoginRequest, keys: list[tuple[str, str]]) -> Pdu:
        assert self._auth is not None and self._negotiator is not None
        if req.csg != self._stage:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"CSG {req.csg} != {self._stage}")
        if req.transit and not _legal_transition(req.csg, req.nsg):
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"bad transition {req.csg}->{req.nsg}")
        if req.csg == STAGE_OPERATIONAL and self._auth.required and self._auth.state != "done":
            raise LoginFailed(LoginStatus.AUTH_FAILURE, "authentication required")
        answers: list[tuple[str, str]] = []
        security = {k: v for k, v in keys if k in SECURITY_KEYS}
        if security:
            if req.csg != STAGE_SECURITY:
                raise LoginFailed(LoginStatus.INITIATOR_ERROR, "security keys after security stage")
            answers += self._security(security)
        for key, value in keys:
            if key not in SECURITY_KEYS:
                answer = self._negotiator.answer(key, value)
                if answer is not None:
                    answers.append(answer)
        transit = req.transit and self._may_transit(req)
        answers += self._declarations(req, transit)
        if transit:
            self._stage = req.nsg
            if req.nsg == STAGE_FULL_FEATURE:
                return self._finish(req, answers)
        return self._response(req, transit=transit, data=encode_text(answers))

    def _may_transit(self, req: m.LoginRequest) -> bool:
        assert self._auth is not None
        if req.csg != STAGE_SECURITY or self._auth.state == "done":
            return True
        if self._auth.state == "start":
            if self._auth.required:
                raise LoginFailed(LoginStatus.AUTH_FAILURE, "no authentication negotiated")
            self._auth.state = "done"
            return True
        return False  # CHAP exchange still running: stay in the security stage

    def _security(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        auth = self._auth
        assert auth is not None
        try:
            if "AuthMethod" in keys:
                if auth.state != "start":
                    raise ChapError("AuthMethod renegotiated")
                chosen = [("AuthMethod", self._choose_method(auth, keys["AuthMethod"]))]
                if auth.state == "chap_a" and "CHAP_A" in keys:  # both in one PDU
                    auth.state = "chap_r"
                    return chosen + auth.chap.challenge(keys["CHAP_A"])
                return chosen
            if auth.state == "chap_a" and "CHAP_A" in keys:
                auth.state = "chap_r"
                return auth.chap.challenge(keys["CHAP_A"])
            if auth.state == "chap_r" and "CHAP_R" in keys:
                answer = auth.chap.verify(keys)
                auth.state = "done"
                return answer
        except ChapError as exc:
            raise LoginFailed(LoginStatus.AUTH_FAILURE, str(exc)) from exc
        raise LoginFailed(LoginStatus.INITIATOR_ERROR, "unexpected security keys")

    @staticmethod
    def _choose_method(auth: _Auth, offered: str) -> str:
        for method in offered.split(","):
            if method in auth.methods:
                auth.state = "done" if method == "None" else "chap_a"
                return method
        raise ChapError(f"no acceptable AuthMethod in {offered!r}")

    def _declarations(self, req: m.LoginRequest, transit: bool) -> list[tuple[str, str]]:
        assert self._first is not None
        out: list[tuple[str, str]] = []
        if not self._sent_tpgt and self._first.target is not None:
            self._sent_tpgt = True
            out.append(("TargetPortalGroupTag", str(self._tpgt)))
            if self._first.target.alias:
                out.append(("TargetAlias", self._first.target.alias))
        operational = req.csg == STAGE_OPERATIONAL or (transit and req.nsg == STAGE_FULL_FEATURE)
        if operational and not self._sent_mrdsl:
            self._sent_mrdsl = True
            out.append(("MaxRecvDataSegmentLength", str(self._limits.max_recv_data_segment_bytes)))
        return out

    def _finish(self, req: m.LoginRequest, answers: list[tuple[str, str]]) -> Pdu:
        assert self._first is not None and self._negotiator is not None
        first = self._first
        result = LoginResult(
            initiator_name=first.initiator_name,
            isid=first.isid,
            tsih=first.tsih,
            cid=first.cid,
            target=first.target,
            params=self._negotiator.finish(),
            cmd_sn=first.cmd_sn,
            stat_sn=0,
        )
        status, tsih = self._portal.admit(result)
        if status != LoginStatus.SUCCESS:
            raise LoginFailed(status, "session admission refused")
        pdu = self._response(req, transit=True, data=encode_text(answers), tsih=tsih)
        self.result = LoginResult(
            initiator_name=result.initiator_name,
            isid=result.isid,
            tsih=tsih,
            cid=result.cid,
            target=result.target,
            params=result.params,
            cmd_sn=result.cmd_sn,
            stat_sn=self._stat_sn,
        )
        self.done = True
        return pdu

    def _response(
        self,
        req: m.LoginRequest,
        *,
        transit: bool,
        status: int = LoginStatus.SUCCESS,
        data: bytes = b"",
        tsih: int = 0,
    ) -> Pdu:
        cmd_sn = self._first.cmd_sn if self._first else req.cmd_sn
        seq = m.Seq(self._stat_sn, cmd_sn, (cmd_sn + self._queue_depth - 1) & 0xFFFFFFFF)
        self._stat_sn = (self._stat_sn + 1) & 0xFFFFFFFF
        return m.login_response(
            seq,
            transit=transit,
            csg=req.csg,
            nsg=req.nsg,
            isid=req.isid,
            tsih=tsih if status == LoginStatus.SUCCESS else 0,
            itt=req.itt,
            status_class=status >> 8,
            status_detail=status & 0xFF,
            data=data if status == LoginStatus.SUCCESS else b"",
        )


def _legal_transition(csg: int, nsg: int) -> bool:
    return (csg, nsg) in {
        (STAGE_SECURITY, STAGE_OPERATIONAL),
        (STAGE_SECURITY, STAGE_FULL_FEATURE),
        (STAGE_OPERATIONAL, STAGE_FULL_FEATURE),
    }
