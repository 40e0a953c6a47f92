# SPDX-License-Identifier: Apache-2.0
"""`llm-datadist secret`: one fresh 256-bit link secret per call, alone on stdout, usable as
llmdd.LinkSecret. That two such secrets link, and two different ones do not, is in
tests/integration/test_link.py (test_link_with_generated_secrets)."""
import base64
import re
import subprocess
import sys

import llm_datadist as ld
from config_helpers import make_config
from llm_datadist import LLMRole
from llm_datadist.cli import new_link_secret

URLSAFE_43 = re.compile(r"[A-Za-z0-9_-]{43}")


def run_secret() -> str:
    out = subprocess.run([sys.executable, "-m", "llm_datadist.cli", "secret"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    return out.stdout


def decoded(secret: str) -> bytes:
    return base64.urlsafe_b64decode(secret + "=")


def test_prints_one_line_and_nothing_else_and_two_calls_differ():
    first, second = run_secret(), run_secret()
    for out in (first, second):
        assert out.endswith("\n") and out.count("\n") == 1, repr(out)
        assert URLSAFE_43.fullmatch(out.strip()), repr(out)
        assert len(decoded(out.strip())) == 32  # 256 bits
    assert first != second


def test_secrets_look_random():
    # 400 secrets = 102,400 bits: all distinct, and the share of one bits within 5 sigma
    # (sigma = 160 bits) of half. A constant, a counter or a short seed fails one of these.
    secrets = [new_link_secret() for _ in range(400)]
    assert len(set(secrets)) == len(secrets)
    raw = b"".join(decoded(s) for s in secrets)
    ones = sum(bin(byte).count("1") for byte in raw)
    bits = len(raw) * 8
    assert abs(ones - bits / 2) < 5 * (bits ** 0.5) / 2, (ones, bits)
    assert len(set(raw)) == 256  # every byte value occurs in 12,800 random bytes


def test_usable_as_link_secret_option():
    secret = run_secret().strip()
    cfg = make_config()
    cfg.ge_options = {"llmdd.LinkSecret": secret}
    options = cfg.generate_options()
    assert options["llmdd.LinkSecret"] == secret
    dd = ld.LLMDataDist(LLMRole.PROMPT, 1)
    try:
        dd.init(options)
        assert dd.cache_manager.pool_stats() is not None
    finally:
        dd.finalize()
