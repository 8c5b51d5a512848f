"""The declared-parameter validator of functions: positional and keyword arguments are
checked against their declarations and passed on normalized; defaults are not re-checked."""

import pytest

from featvis.params import POSITIVE, RATE, validated


@validated(steps=POSITIVE, lr=RATE)
def _run(model, steps=10, *, lr=0.5, note="x"):
    return model, steps, lr, note


def test_positional_and_keyword_arguments_are_checked_and_normalized():
    assert _run("m", 3, lr=1) == ("m", 3, 1.0, "x")
    assert isinstance(_run("m", lr=1)[2], float)
    assert _run("m", steps=4) == ("m", 4, 0.5, "x")
    assert _run("m") == ("m", 10, 0.5, "x")                    # defaults untouched


@pytest.mark.parametrize("call, message", [
    (lambda: _run("m", 0), "steps must be a positive integer, got 0"),
    (lambda: _run("m", steps=True), "steps must be a positive integer"),
    (lambda: _run("m", lr=0.0), "lr"),
    (lambda: _run("m", lr=float("nan")), "lr"),
])
def test_a_bad_argument_is_one_value_error_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_call_that_does_not_fit_the_signature_is_the_functions_own_type_error():
    with pytest.raises(TypeError):
        _run("m", 3, 4)
    with pytest.raises(TypeError):
        _run("m", 3, steps=3)


def test_a_declaration_of_no_parameter_is_refused_at_decoration():
    with pytest.raises(TypeError, match="no parameter 'nope'"):
        validated(nope=POSITIVE)(lambda a: a)
