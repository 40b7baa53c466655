"""An alert notification as an email: a subject on one line, a text and an HTML part (every
value escaped), a Message-ID that is the same on every retry."""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from urllib.parse import urlsplit

from asgimon.alerts.channels import Notification

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _measure(value: float, unit: str) -> str:
    return _number(value) + ("" if unit in ("", "%") else " ") + unit


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    for size, name, smaller, small_name in ((86400, "d", 3600, "h"), (3600, "h", 60, "min")):
        if s >= size:
            rest = (s % size) // smaller
            return f"{s // size} {name}" + (f" {rest} {small_name}" if rest else "")
    return f"{s // 60} min" if s >= 60 else f"{s} s"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(n: Notification) -> list[tuple[str, str]]:
    facts = [("Rule", n.rule_name), ("Project", n.project_id)]
    if n.value is not None:
        measured = _measure(n.value, n.unit)
        if n.threshold is not None:
            measured += f" (threshold {_measure(n.threshold, n.unit)})"
        facts.append(("Value", measured))
    facts.append(("When", _when(n.at)))
    if n.status == "resolved" and n.started_at is not None:
        facts.append(("Fired for", _duration(n.at - n.started_at)))
    elif n.started_at is not None and n.started_at < n.at:
        facts.append(("Firing since", _when(n.started_at)))
    if n.suppressed > 0:
        facts.append(("Suppressed repeats", f"{n.suppressed} since the previous notification"))
    return facts


def _subject(n: Notification) -> str:
    return one_line(f"[asgimon] {n.status.upper()}: {n.rule_name} ({n.project_id})", 200)


def _message_id(notification_id: str, sender: str) -> str:
    # The same id on every retry lets a mail client or list server drop a duplicate.
    domain = parseaddr(sender)[1].rpartition("@")[2]
    if not _DOMAIN.fullmatch(domain):
        domain = "asgimon.invalid"
    local = notification_id
    if not _SAFE_ID.fullmatch(local):
        local = hashlib.sha256(notification_id.encode("utf-8", "replace")).hexdigest()[:32]
    return f"<asgimon.{local}@{domain}>"


def compose(
    n: Notification, sender: str, to: Sequence[str], dashboard_url: str | None
) -> EmailMessage:
    link = n.link or dashboard_url
    if link is not None and urlsplit(link).scheme.lower() not in ("http", "https"):
        link = None  # a javascript: or data: link must not become a button in the mail
    heading = f"{n.status.upper()}: {n.rule_name}"
    facts = _facts(n)
    labels = sorted(n.labels.items())

    text = [heading, "", n.summary, ""]
    width = max(len(name) for name, _ in facts) + 2
    text += [f"{name + ':':<{width}}{value}" for name, value in facts]
    if labels:
        text += ["", "Labels:"] + [f"  {k}: {v}" for k, v in labels]
    if link is not None:
        text += ["", f"Open in asgimon: {link}"]

    e = html.escape
    rows = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    if labels:
        rows += "<tr><th colspan='2' align='left'>Labels</th></tr>"
        rows += "".join(f"<tr><td>{e(k)}</td><td><code>{e(v)}</code></td></tr>" for k, v in labels)
    button = f"<p><a href='{e(link, quote=True)}'>Open in asgimon</a></p>" if link else ""
    body = (
        f"<!doctype html><html><body><h2>{e(heading)}</h2><p>{e(n.summary)}</p>"
        f"<table cellpadding='4'>{rows}</table>{button}</body></html>"
    )

    message = EmailMessage()
    message["Subject"] = _subject(n)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(n.at, usegmt=True)
    message["Message-ID"] = _message_id(n.id, sender)
    # RFC 3834: out-of-office responders must not answer an automatic message.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join(text) + "\n")
    message.add_alternative(body, subtype="html")
    return message
