"""iSCSI target protocol (RFC 7143), sans-IO: PDU codec, text keys, login, sessions, CHAP."""
