"""The one exception type that user-facing code shows as a message, not a traceback, and the stop request."""

import threading

#: Set when a stop was asked for (the CLI's SIGTERM handler, which also raises KeyboardInterrupt). Python
#: swallows an exception that a signal handler raises while a finalizer (``__del__``) runs -- seen with PySCF's
#: objects during ``phisnet generate`` -- so long loops also check this between their steps.
stop_requested = threading.Event()


def check_stop() -> None:
    """Raise KeyboardInterrupt when a stop was asked for and its first KeyboardInterrupt went astray."""
    if stop_requested.is_set():
        raise KeyboardInterrupt


class InputError(ValueError):
    """Invalid user input: a molecule, a file, a checkpoint or a setting.

    The message is one human sentence that names what is wrong (which atom,
    which line) and what is allowed.
    """
