"""SMTP: one connection per delivery run, one message per transaction, every failure classified.

A failure of one message (a refused recipient, a 451 on DATA) leaves the connection in use for the
next one; a failure of the connection itself (refused, timed out, disconnected, login refused)
fails the rest of the run fast with the same reason instead of waiting out a timeout per message.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from types import TracebackType
from typing import Any

from email.message import EmailMessage

from secmon.alert.safe import one_line
from secmon.config import SmtpSettings
from secmon.errors import ConfigError

REPLY_LIMIT = 500


class SendFailure(Exception):
    """The server did not take one message. `code` is its SMTP reply code when it gave one."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = one_line(reason, REPLY_LIMIT)  # a server's reply is shown in terminals and Kibana
        self.code = code

    @property
    def permanent(self) -> bool:
        """5xx: the server will not take it as it is (retried anyway until alerts.max_age: configs get fixed)."""
        return self.code is not None and 500 <= self.code < 600


class _KeepsDataReply(smtplib.SMTP):
    """smtplib.SMTP that keeps the reply to DATA (`250 2.0.0 Ok: queued as ...`), for the outbox record."""

    data_reply: tuple[int, bytes] = (0, b"")

    def data(self, msg: Any) -> tuple[int, bytes]:
        self.data_reply = super().data(msg)
        return self.data_reply


class _KeepsDataReplySSL(smtplib.SMTP_SSL, _KeepsDataReply):
    pass


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _credentials(smtp: SmtpSettings) -> tuple[str, str] | None:
    if not smtp.username_env:
        return None
    user, password = os.environ.get(smtp.username_env), os.environ.get(smtp.password_env or "")
    if not user or password is None:
        raise ConfigError(f"smtp.username_env/password_env name {smtp.username_env}/{smtp.password_env}, "
                          "which must both be set")
    return user, password


class SmtpSession:
    """Use as a context manager; `send` connects on first use. No I/O in the constructor."""

    def __init__(self, smtp: SmtpSettings) -> None:
        # config.py rejects this too; a sender built from other settings must still never leak a password.
        if smtp.username_env and not (smtp.starttls or smtp.ssl) and not smtp.allow_plaintext_auth:
            raise ConfigError("refusing SMTP AUTH without TLS: the password would cross the network in clear text",
                              hint="turn on smtp.starttls or smtp.ssl, or set smtp.allow_plaintext_auth: true")
        self.smtp = smtp
        self._credentials = _credentials(smtp)
        self._client: _KeepsDataReply | None = None
        self._down: str = ""  # why the server cannot be reached in this run

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()  # the server went away first: nothing left to say goodbye to

    def _connect(self) -> _KeepsDataReply:
        smtp = self.smtp
        context = ssl.create_default_context()
        try:
            if smtp.ssl:
                client: _KeepsDataReply = _KeepsDataReplySSL(smtp.host, smtp.port, timeout=smtp.timeout,
                                                            context=context)
            else:
                client = _KeepsDataReply(smtp.host, smtp.port, timeout=smtp.timeout)
            try:
                if smtp.starttls:
                    client.starttls(context=context)
                if self._credentials:
                    if not isinstance(client.sock, ssl.SSLSocket) and not smtp.allow_plaintext_auth:
                        raise ConfigError("refusing SMTP AUTH: the connection is not encrypted")
                    client.login(*self._credentials)
            except BaseException:
                client.close()
                raise
        except smtplib.SMTPResponseException as exc:  # greeting, STARTTLS or AUTH refused
            self._down = f"{smtp.host}:{smtp.port} refused the session: {exc.smtp_code} {_text(exc.smtp_error)}"
            raise SendFailure(self._down, exc.smtp_code) from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, unreachable, timeout, TLS, disconnected
            self._down = f"cannot reach SMTP server {smtp.host}:{smtp.port}: {type(exc).__name__}: {exc}"
            raise SendFailure(self._down) from None
        return client

    def send(self, message: EmailMessage, recipient: str) -> str:
        """Send to exactly `recipient` (never to addresses parsed from headers); the server's reply.

        Raises SendFailure.
        """
        if self._down:
            raise SendFailure(self._down)
        if self._client is None:
            self._client = self._connect()
        client = self._client
        try:
            client.send_message(message, from_addr=self.smtp.sender, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(recipient, (None, b""))
            raise SendFailure(f"recipient refused: {code} {_text(reply)}", code) from None
        except smtplib.SMTPResponseException as exc:  # sender or data refused: the session is still usable
            if exc.smtp_code == 421:  # the server is closing the session (smtplib closed it too)
                self._client = None
            raise SendFailure(f"{type(exc).__name__}: {exc.smtp_code} {_text(exc.smtp_error)}", exc.smtp_code) from None
        except (smtplib.SMTPException, OSError) as exc:  # disconnected or timed out mid-message
            self._client = None
            client.close()
            raise SendFailure(f"{type(exc).__name__}: {exc}") from None
        code, reply = client.data_reply
        return one_line(f"{code} {_text(reply)}", REPLY_LIMIT)
