"""SIGINT/SIGTERM handling: one signal is a request, a second one stops, an early Ctrl-C is not lost."""

import signal
import sys
import types

import pytest

from jaxlab.train import signals
from jaxlab.train.signals import StopRequest, interrupt_before_training


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    sys.unraisablehook = hook
    signals._early_interrupt = None


def test_one_signal_is_a_request_and_a_second_ctrl_c_raises(restore_handlers):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # a different signal than the first: still a second request
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_sigterm_reaches_the_previous_handler(restore_handlers):
    received = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and received == []
        signal.raise_signal(signal.SIGTERM)
        assert received == [signal.SIGTERM]


def test_a_swallowed_early_ctrl_c_makes_the_next_loop_stop(restore_handlers, capsys):
    interrupt_before_training()
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt as error:  # what CPython does to an exception raised inside a GC callback
        sys.unraisablehook(types.SimpleNamespace(exc_type=KeyboardInterrupt, exc_value=error, exc_traceback=None,
                                                 err_msg=None, object=None))  # fmt: skip
    else:
        pytest.fail("Ctrl-C before training must still raise KeyboardInterrupt")
    assert capsys.readouterr().err == ""  # the remembered interrupt is not reported as an ignored exception
    with StopRequest() as stop:
        assert stop.requested and stop.signum == signal.SIGINT
    with StopRequest() as stop:
        assert not stop.requested  # consumed once


def test_without_an_early_ctrl_c_the_loop_starts_unrequested(restore_handlers):
    interrupt_before_training()
    with StopRequest() as stop:
        assert not stop.requested
