"""tailwise: the command line (``tailwise ...``), configuration loading and version.

Thin by design: no algorithms live here. Nothing imports ``tailwise``.
"""

__version__ = "0.1.0"
