"""The one exception type that the CLI turns into a single line and a non-zero exit."""


class UserError(Exception):
    """A problem in the user's config, data or paths, not a bug in fuss-ray.

    The message must name the field or file at fault, because the CLI prints it alone,
    without a traceback.
    """


class SimulationError(Exception):
    """The run cannot go on for a reason outside the config (lost actors, a dead node).

    Like a UserError it is printed as one line; the exit code differs (1, not 2).
    """
