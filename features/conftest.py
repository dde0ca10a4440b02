"""Feature suites: the step library is shared by every feature file and every target."""

from steps.common import *  # noqa: F401,F403 - pytest-bdd finds step definitions in this namespace
from steps.console import *  # noqa: F401,F403
from steps.compat import *  # noqa: F401,F403
from steps.mobiusflow import *  # noqa: F401,F403
from steps.neuroomnet import *  # noqa: F401,F403
from steps.planktoscope import *  # noqa: F401,F403
from steps.bactobox import *  # noqa: F401,F403
