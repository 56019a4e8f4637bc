"""The one exception type the driver turns into a one-line message and a non-zero exit."""


class UserError(Exception):
  """A problem the user can fix: bad input, a missing file, an impossible setting.

  The message is a single line that names the problem and the fix. The
  command line (`jaxcxr.main`, the benchmarks) prints it without a traceback;
  anything else that escapes is a bug.
  """
