"""tailwise: the one import namespace of the project.

The parts (``tailwise.scorer``, ``tailwise.simulator``, ``tailwise.learner``, ...) are the
repository's top-level folders; ``tailwise.lab`` wires them together; the command line
(``tailwise/cli.py`` and ``tailwise/cmd_*.py``) is thin over ``tailwise.lab``. No part
imports ``tailwise.lab`` or the command line.
"""

__version__ = "0.1.0"
