"""Pre-generated callback load: distinct ``add_external_contact`` events, encrypted and signed like WeCom.

Every callback has its own ExternalUserID (so its own dedup key and ordering key), its own nonce and a
fresh random AES prefix, so the edge really verifies, decrypts, parses and stores each one: there is no
dedup shortcut. The benchmark corp uses the public WeCom test-vector CorpID, Token and EncodingAESKey.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from bot.edge.crypto import CallbackCrypto, build_post_body

CORP_ID = "wx5823bf96d3bd56c7"
TOKEN = "QDG6eK"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
AGENT_ID = "1000002"
PATH = "/wecom/callback"


@dataclass(frozen=True, slots=True)
class Callback:
    """One signed POST: the path with its query string, and the outer XML body."""

    target: str
    body: bytes


def _inner_xml(external_userid: str, userid: str, create_time: int, state: str, welcome_code: str) -> str:
    return (
        "<xml>"
        f"<ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
        "<FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{create_time}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_external_contact]]></Event>"
        "<ChangeType><![CDATA[add_external_contact]]></ChangeType>"
        f"<UserID><![CDATA[{userid}]]></UserID>"
        f"<ExternalUserID><![CDATA[{external_userid}]]></ExternalUserID>"
        f"<State><![CDATA[{state}]]></State>"
        f"<WelcomeCode><![CDATA[{welcome_code}]]></WelcomeCode>"
        "</xml>"
    )


def make_callbacks(count: int, *, run_id: str, start: int = 0, now: int | None = None) -> list[Callback]:
    """``count`` distinct signed callbacks; ``run_id`` and ``start`` keep ids unique across batches."""
    crypto = CallbackCrypto(TOKEN, AES_KEY, CORP_ID)
    stamp = int(time.time()) if now is None else now
    callbacks = []
    for n in range(start, start + count):
        external_userid = f"wmBench{run_id}{n:08d}"
        userid = f"advisor{n % 500:03d}"
        inner = _inner_xml(external_userid, userid, stamp, f"ad:{n % 40}:dealer{n % 300}", f"WELCOME{run_id}{n:08d}")
        nonce = f"{run_id}{n}"
        encrypt, signature = crypto.encrypt(inner, nonce=nonce, timestamp=str(stamp))
        query = urlencode({"msg_signature": signature, "timestamp": str(stamp), "nonce": nonce})
        body = build_post_body(encrypt, CORP_ID, AGENT_ID).encode("utf-8")
        callbacks.append(Callback(target=f"{PATH}?{query}", body=body))
    return callbacks


def write_wrk_file(callbacks: list[Callback], path: Path) -> None:
    """One request per line, ``target<TAB>body`` (neither contains a tab or a newline), for bench/replay.lua."""
    with path.open("wb") as out:
        for cb in callbacks:
            out.write(cb.target.encode("ascii") + b"\t" + cb.body + b"\n")
