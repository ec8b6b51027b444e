"""A Ctrl-C that lands inside a finalizer (libvirt-python frees its objects in __del__) is not
lost: Python would print and drop it there, and the run would go on."""
import os
import signal
import time

import pytest

from provisioner import interrupts
from provisioner.progress import progress_printer


class Freed:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)        # the handler runs here, inside __del__


@pytest.fixture
def handler():
    previous = signal.getsignal(signal.SIGINT)
    interrupts.install()
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_interrupt_inside_a_finalizer_is_raised_by_the_next_progress_line(handler):
    Freed()                     # finalized at once
    say = progress_printer(quiet=True)
    with pytest.raises(KeyboardInterrupt):
        say("waiting for vm1 to boot")
    say("cleaning up")          # raised once: cleanup that reports progress is not cut short


def test_an_interrupt_elsewhere_raises_at_once(handler):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
