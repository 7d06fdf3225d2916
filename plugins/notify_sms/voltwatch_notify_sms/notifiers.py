"""The `sms` (modem) and `sms_http` (gateway) notifier platforms.

Both only send one message and say how it went; queues, retries, failover and records are
the core's (hub/core/notify). What each adds is the knowledge of its channel: which modem
errors are worth retrying, which HTTP answers mean success.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import aiohttp
import jinja2
import voluptuous as vol

from hub.core.config import duration
from hub.core.notify import DeliveryError, Notifier, OutgoingMessage, SendResult

from .modem import Modem, ModemError
from .pdu import PduError, StatusReport

_LOGGER = logging.getLogger(__name__)
_NUMBER = re.compile(r"^\+?[0-9]{3,20}$")

#: +CMS ERROR codes where sending the same PDU again cannot help (TS 24.011 causes and
#: TS 27.005 §3.2.5): unassigned number, unidentified subscriber, invalid PDU / text
#: parameter, invalid character, invalid memory index. 500 (unknown) and network congestion
#: (42, 47) are retried.
PERMANENT_CMS = frozenset({1, 21, 28, 96, 304, 305, 306, 321})

SMS_SCHEMA = {
    vol.Required("modem"): vol.Schema({
        vol.Required("port"): str,
        vol.Optional("baudrate", default=115200): vol.All(int, vol.Range(min=300)),
    }),
    vol.Optional("mode", default="pdu"): vol.In(("pdu", "text")),
    vol.Optional("health_interval", default=30.0): vol.All(duration, vol.Range(min=0.1)),
    vol.Optional("command_timeout", default=10.0): vol.All(duration, vol.Range(min=0.05)),
    vol.Optional("send_timeout", default=60.0): vol.All(duration, vol.Range(min=0.05)),
    # ask the network for a status report per message (TP-SRR, +CDS): records become
    # `delivered`, or `failed` with the network's reason
    vol.Optional("delivery_reports", default=True): bool,
    # how long the parts of a multi-part reply wait for the rest before they are dropped
    vol.Optional("multipart_timeout", default=600.0): vol.All(duration, vol.Range(min=0.01)),
}


def check_number(recipient: str) -> str:
    number = recipient.strip().replace(" ", "").replace("-", "")
    if not _NUMBER.match(number):
        raise DeliveryError(f"invalid phone number {recipient!r}", retryable=False)
    return number


class SmsNotifier(Notifier):
    """SMS through a serial AT-command modem; replies acknowledge alarms."""

    platform = "sms"

    def __init__(self, hub: Any, config: dict[str, Any]) -> None:
        super().__init__(hub, config)
        modem = config["modem"]
        self.modem = Modem(modem["port"], modem["baudrate"],
                           command_timeout=config["command_timeout"],
                           send_timeout=config["send_timeout"],
                           health_interval=config["health_interval"], mode=config["mode"],
                           on_incoming=self._incoming, on_report=self._report,
                           status_reports=config["delivery_reports"],
                           multipart_timeout=config["multipart_timeout"])

    @property
    def available(self) -> bool:
        return self.modem.connected

    async def async_start(self) -> None:
        self.modem.start()

    async def async_stop(self) -> None:
        await self.modem.stop()

    async def async_send(self, message: OutgoingMessage) -> SendResult:
        number = check_number(message.recipient)
        try:
            refs = await self.modem.send_sms(number, message.text)
        except PduError as err:
            raise DeliveryError(str(err), retryable=False) from err
        except ModemError as err:
            if err.gone:
                raise DeliveryError(err.reason, unavailable=True) from err
            permanent = err.code is not None and err.code in PERMANENT_CMS
            raise DeliveryError(f"modem: {err.reason}", retryable=not permanent) from err
        return SendResult(reference=",".join(str(r) for r in refs))

    async def _incoming(self, sender: str, text: str) -> None:
        notify = getattr(self.hub, "notify", None)
        if notify is not None:
            await notify.async_reply(sender, text, channel=self.name)

    async def _report(self, report: StatusReport) -> None:
        notify = getattr(self.hub, "notify", None)
        if notify is not None:
            await notify.async_delivery_report(
                self.name, str(report.reference), recipient=report.recipient,
                delivered=report.delivered, final=report.final,
                reason=f"delivery report: {report.reason}")

    @property
    def healthy(self) -> bool | None:
        return self.modem.healthy

    @property
    def checked_at(self) -> float | None:
        return self.modem.checked_at

    @property
    def last_error(self) -> str | None:
        return self.modem.last_error

    def status(self) -> dict[str, Any]:
        return {**super().status(), **self.modem.status()}


def _template(value: Any) -> Any:
    """A string, or a mapping/list of them, each a jinja2 template (checked at load)."""
    env = jinja2.Environment(autoescape=False)
    if isinstance(value, str):
        try:
            env.parse(value)
        except jinja2.TemplateSyntaxError as err:
            raise vol.Invalid(f"template error: {err}") from None
        return value
    if isinstance(value, dict):
        return {str(k): _template(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_template(v) for v in value]
    return value


SMS_HTTP_SCHEMA = {
    vol.Required("url"): vol.All(str, _template),
    vol.Optional("method", default="POST"): vol.All(str, vol.Upper,
                                                    vol.In(("GET", "POST", "PUT"))),
    vol.Optional("headers", default={}): vol.All({str: str}, _template),
    vol.Optional("params", default={}): vol.All({str: str}, _template),
    # a mapping is sent as JSON, a string as it is (form or XML); each value a template
    vol.Optional("body"): _template,
    vol.Optional("success", default={}): vol.Schema({
        vol.Optional("status", default=[200, 201, 202, 204]): [int],
        # a dotted path into the JSON answer and the value it must have, e.g. Code: OK
        vol.Optional("json"): {str: vol.Any(str, int, float, bool)},
    }),
    # a dotted path into the JSON answer holding the gateway's message id
    vol.Optional("reference"): str,
}


def _dig(data: Any, path: str) -> Any:
    for key in path.split("."):
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return None
    return data


class SmsHttpNotifier(Notifier):
    """SMS through an HTTP gateway (Aliyun, Twilio, or any): the request is templated."""

    platform = "sms_http"

    def __init__(self, hub: Any, config: dict[str, Any]) -> None:
        super().__init__(hub, config)
        self.env = jinja2.Environment(autoescape=False)
        self.env.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=False)
        self.session: aiohttp.ClientSession | None = None

    async def async_start(self) -> None:
        self.session = aiohttp.ClientSession()

    async def async_stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _render(self, value: Any, context: dict[str, Any]) -> Any:
        if isinstance(value, str):
            return self.env.from_string(value).render(**context)
        if isinstance(value, dict):
            return {k: self._render(v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, context) for v in value]
        return value

    async def async_send(self, message: OutgoingMessage) -> SendResult:
        number = check_number(message.recipient)
        context = {"recipient": number, "message": message.text, "title": message.title or "",
                   "alarm_id": message.alarm_id, "delivery_id": message.delivery_id,
                   "language": message.language, "severity": message.severity}
        conf = self.config
        kwargs: dict[str, Any] = {
            "headers": self._render(conf["headers"], context),
            "params": self._render(conf["params"], context) or None,
        }
        body = conf.get("body")
        if isinstance(body, dict | list):
            kwargs["json"] = self._render(body, context)
        elif isinstance(body, str):
            kwargs["data"] = self._render(body, context).encode("utf-8")
        assert self.session is not None
        url = self._render(conf["url"], context)
        try:
            async with self.session.request(conf["method"], url, **kwargs) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, OSError) as err:
            raise DeliveryError(f"gateway unreachable: {type(err).__name__}: {err}") from err
        success = conf["success"]
        if status not in success["status"]:
            retryable = status >= 500 or status in (408, 429)
            raise DeliveryError(f"gateway HTTP {status}: {text[:200]}", retryable=retryable)
        answer: Any = None
        if success.get("json") or conf.get("reference"):
            try:
                answer = json.loads(text)
            except ValueError:
                raise DeliveryError(f"gateway answer is not JSON: {text[:200]}") from None
        for path, expected in (success.get("json") or {}).items():
            got = _dig(answer, path)
            if got != expected:
                raise DeliveryError(f"gateway refused: {path}={got!r} (expected {expected!r})"
                                    f": {text[:200]}")
        reference = _dig(answer, conf["reference"]) if conf.get("reference") else None
        return SendResult(reference=None if reference is None else str(reference)[:64])
