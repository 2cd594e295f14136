"""The one exception type that the CLI turns into a single line and a non-zero exit."""


class UserError(Exception):
    """A problem in the user's config, data or paths, not a bug in fuss-ray.

    The message must name the field or file at fault, because the CLI prints it alone,
    without a traceback.
    """
