"""A call that must end: a hang is a test failure, not a stuck suite."""

import threading


def finishes_within(seconds: float, call, *args, **kwargs):
    """`call(*args, **kwargs)`'s result, or its exception, if it ends within `seconds`; an
    AssertionError naming the hang otherwise (the call is left running on a daemon thread)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call(*args, **kwargs)
        except BaseException as e:  # handed back to the test's thread
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{getattr(call, '__name__', call)} still running after {seconds} s: a hang"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
