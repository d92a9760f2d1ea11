"""The one exception type for bad user input.

Raised anywhere (CLI, config, files, checkpoints, process grids) with a message that
names the problem and the fix. The trainer prints it as one line
``mpicnn: error: <message>`` on rank 0 and exits with status 2 on every rank.
"""


class UserError(Exception):
    """Bad input a user can fix; the message is shown without a traceback."""
