"""The one kind of error a user can cause: bad input, a path that is not what it should be, a
full disk, a damaged file. The ``alexnet`` command prints it as one line and exits 2; any other
exception is a bug and keeps its traceback.

It is a ``ValueError``, so code that caught ``ValueError`` from this package before still
does. The package's own kinds (a checkpoint, a store, a setting, an export) derive from it.
"""


class UserError(ValueError):
    """A problem with the user's input, said in one line that names what and what to do."""
