"""The one exception type that user-facing code shows as a message, not a traceback."""


class InputError(ValueError):
    """Invalid user input: a molecule, a file, a checkpoint or a setting.

    The message is one human sentence that names what is wrong (which atom,
    which line) and what is allowed.
    """
