"""Where alerts are mailed from: ``ALERTS_SMTP_URL``, read once and checked at start-up."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from asgimon.errors import ConfigError

__all__ = ["URL_RULE", "SmtpServer", "redacted"]

URL_RULE = (
    "smtp://[user[:password]@]host[:port] (STARTTLS when offered) or smtps://… (TLS), "
    "options ?starttls=require|off and ?ca_file=/path"
)
_STARTTLS: dict[str, bool | None] = {"auto": None, "require": True, "off": False}


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how to reach the mail server: ``ALERTS_SMTP_URL`` read once.

    >>> SmtpServer.from_url("smtp://mail.example.com").port
    25
    """

    host: str
    port: int
    implicit_tls: bool
    starttls: bool | None
    """True: required; False: never; None: when the server offers it."""
    tls_context: ssl.SSLContext = field(repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """Parse ``smtp://`` or ``smtps://``; a URL that cannot be used is a ConfigError."""

        def bad(allowed: str) -> ConfigError:
            return ConfigError("ALERTS_SMTP_URL", redacted(url), allowed)

        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise bad(URL_RULE) from None
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise bad(URL_RULE)
        if not parts.hostname:
            raise bad("a host name: " + URL_RULE)
        if port == 0:
            raise bad("a port from 1 to 65535")
        if parts.path not in ("", "/") or parts.fragment:
            raise bad("no path and no #fragment: " + URL_RULE)
        options: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in ("starttls", "ca_file") or key in options:
                raise bad(f"the options starttls and ca_file, each at most once, not {key!r}")
            options[key] = value
        mode = options.get("starttls", "auto").lower()
        if mode not in _STARTTLS:
            raise bad("starttls=require, starttls=off or starttls=auto (the default)")
        if scheme == "smtps" and "starttls" in options:
            raise bad("no starttls option with smtps://, which speaks TLS from the start")
        username = None if parts.username is None else unquote(parts.username)
        password = None if parts.password is None else unquote(parts.password)
        if username == "":
            raise bad("a user name before the password")
        starttls = _STARTTLS[mode]
        if username is not None and starttls is None and scheme == "smtp":
            # Opportunistic STARTTLS lets anyone on the path strip the offer and read the
            # password; with credentials, TLS is required unless starttls=off says otherwise.
            starttls = True
        ca_file = options.get("ca_file")
        if ca_file == "":
            raise bad("a path after ca_file=")
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise bad(f"a readable PEM file of CA certificates for ca_file ({exc})") from None
        return cls(
            host=parts.hostname,
            port=port or (465 if scheme == "smtps" else 25),
            implicit_tls=scheme == "smtps",
            starttls=False if scheme == "smtps" else starttls,
            tls_context=context,
            username=username,
            password=password,
        )


def redacted(url: str) -> str:
    # Cut at the last "@", not as a URL parser would: a password holding "/" or "#" must
    # not leak through a URL too broken to parse.
    head, sep, rest = url.partition("://")
    userinfo, at, tail = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{head}://{userinfo.partition(':')[0]}:(hidden)@{tail}"
