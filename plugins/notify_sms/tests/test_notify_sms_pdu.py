"""PDU segmentation checked against the simulator's own decoder (written separately).

The lengths are the edges: one message up to 160 GSM-7 / 70 UCS2 characters, then 153 / 67
per segment; 307–320 are where python-gsmmodem's 160-based split loses the tail.
"""

from __future__ import annotations

import pytest
from voltwatch_notify_sms import pdu
from voltwatch_notify_sms.simulator import decode_submit, encode_deliver


def _roundtrip(text: str) -> list:
    return [decode_submit(p.hex) for p in pdu.encode_submit("+8613800138000", text)]


@pytest.mark.parametrize(("length", "parts"),
                         [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (320, 3), (459, 3),
                          (460, 4)])
def test_gsm7_segments(length: int, parts: int) -> None:
    text = "".join("abcdefghijklmnopqrstuvwxyz0123456789"[i % 36] for i in range(length))
    segments = _roundtrip(text)
    assert len(segments) == parts
    assert "".join(s.text for s in segments) == text
    assert all(s.dcs == 0 for s in segments)
    if parts > 1:
        assert [s.units for s in segments[:-1]] == [153] * (parts - 1)
        assert [s.concat[1:] for s in segments] == [(parts, i) for i in range(1, parts + 1)]
        assert len({s.concat[0] for s in segments}) == 1


@pytest.mark.parametrize(("length", "parts"), [(70, 1), (71, 2), (134, 2), (135, 3)])
def test_ucs2_segments(length: int, parts: int) -> None:
    text = ("剩余电流过大配电箱教学楼" * 20)[:length]
    segments = _roundtrip(text)
    assert len(segments) == parts
    assert "".join(s.text for s in segments) == text
    assert all(s.dcs == 8 for s in segments)
    if parts > 1:
        assert [s.units for s in segments[:-1]] == [67] * (parts - 1)


def test_escape_pair_is_never_split() -> None:
    text = "a" * 152 + "€" + "b" * 10  # the € would straddle septets 153/154
    segments = _roundtrip(text)
    assert "".join(s.text for s in segments) == text
    assert segments[0].units == 152 and segments[0].text.endswith("a")


def test_escape_table_and_known_vector() -> None:
    assert "".join(s.text for s in _roundtrip("[x] {y} ~|^\\ €")) == "[x] {y} ~|^\\ €"
    # the classic example: "hellohello" to 46708251358, no validity period
    (one,) = pdu.encode_submit("+46708251358", "hellohello", validity_minutes=None)
    assert one.hex == "0001000B916407281553F800000AE8329BFD4697D9EC37"
    assert one.tpdu_length == 22


def test_chinese_alarm_text_goes_ucs2() -> None:
    text = "【Voltwatch】报警：第一中学 教学楼A 配电室 配电箱1 剩余电流过大 550mA 11-30 10:15:02，回复1确认"
    segments = _roundtrip(text)
    assert segments[0].dcs == 8 and "".join(s.text for s in segments) == text
    assert segments[0].number == "+8613800138000"


def test_bad_number_is_refused() -> None:
    with pytest.raises(pdu.PduError):
        pdu.encode_submit("not-a-number", "x")


@pytest.mark.parametrize("text", ["1", "确认", "OK thanks"])
def test_deliver_decodes(text: str) -> None:
    message = pdu.decode_deliver(encode_deliver("+8613800138000", text))
    assert (message.sender, message.text) == ("+8613800138000", text)


def test_submit_asks_for_a_status_report_only_when_told() -> None:
    assert not decode_submit(pdu.encode_submit("+8613800138000", "x")[0].hex).status_report
    parts = pdu.encode_submit("+8613800138000", "剩" * 71, status_report=True)
    assert [decode_submit(p.hex).status_report for p in parts] == [True, True]


@pytest.mark.parametrize(("status", "delivered", "final", "words"), [
    (0x00, True, True, "received by the handset"),
    (0x21, False, False, "recipient busy"),
    (0x41, False, True, "incompatible destination"),
    (0x46, False, True, "validity period expired"),
    (0x62, False, True, "no response from the recipient"),
])
def test_status_report_decoded(status: int, delivered: bool, final: bool, words: str) -> None:
    from voltwatch_notify_sms.simulator import encode_status_report

    report = pdu.decode_status_report(encode_status_report(37, "+8613800138000", status))
    assert (report.reference, report.recipient) == (37, "+8613800138000")
    assert (report.delivered, report.final) == (delivered, final)
    assert report.reason == f"{words} (TP-ST 0x{status:02X})"


def test_text_mode_status_report_line() -> None:
    from voltwatch_notify_sms.modem import parse_cds

    report = parse_cds('+CDS: 6,46,"8613800138000",145,"25/11/30,10:15:02+32",'
                       '"25/11/30,10:15:05+32",0', "text")
    assert (report.reference, report.recipient, report.delivered) == (46, "+8613800138000",
                                                                       True)


@pytest.mark.parametrize("ref16", [False, True])
def test_multipart_deliver_header_read(ref16: bool) -> None:
    for text in ("OK then", "确认"):
        message = pdu.decode_deliver(encode_deliver("+8613800138000", text, (0x1234 if ref16
                                                                             else 0x34, 3, 2),
                                                    ref16))
        assert message.text == text
        assert message.concat == ((0x1234 if ref16 else 0x34), 3, 2)


def test_reassembler_keys_sets_by_sender_and_expires_incomplete_ones() -> None:
    from voltwatch_notify_sms.reassembly import Reassembler

    now = [0.0]
    drops: list[tuple[str, str]] = []
    parts = Reassembler(timeout=60, clock=lambda: now[0],
                        on_drop=lambda who, what: drops.append((who, what)))
    assert parts.add("+861", (7, 2, 2), "b") is None
    assert parts.add("+862", (7, 2, 1), "x") is None  # same reference, other sender
    assert parts.add("+861", (7, 2, 1), "a") == "ab"
    assert parts.add("+861", (7, 2, 9), "?") is None and len(parts) == 1  # out of range
    now[0] = 61.0
    assert parts.expire() == 1 and parts.dropped == 1
    assert drops == [("+862", "reference 7: 1 of 2 parts")]
    assert parts.add("+862", (7, 2, 2), "y") is None  # a new set: the old part is gone
