"""One-time sign-in codes: each signs in once, and only within its time."""

from __future__ import annotations

from api.sign_in_codes import LOCAL_PRINCIPAL, SignInCodes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_code_signs_in_once() -> None:
    codes = SignInCodes(ttl_s=60, clock=Clock())
    code = codes.issue(LOCAL_PRINCIPAL)
    assert len(code) >= 32
    assert codes.redeem(code) == LOCAL_PRINCIPAL
    assert codes.redeem(code) is None


def test_a_code_past_its_time_is_refused_and_spent() -> None:
    clock = Clock()
    codes = SignInCodes(ttl_s=60, clock=clock)
    code = codes.issue(LOCAL_PRINCIPAL)
    clock.now += 60
    assert codes.redeem(code) is None
    clock.now -= 30
    assert codes.redeem(code) is None  # spent by the late try


def test_codes_are_distinct_and_unknown_ones_are_refused() -> None:
    codes = SignInCodes(clock=Clock())
    assert codes.issue(LOCAL_PRINCIPAL) != codes.issue(LOCAL_PRINCIPAL)
    assert codes.redeem("guessed") is None and codes.redeem("") is None
