"""nbgrader configuration of the course (run nbgrader from this folder, or use the
``python -m coursetools`` commands, which do).

Grading does not execute notebooks the stock way: the ``Execute`` preprocessor is replaced by
``coursetools.verdicts.SandboxedVerdicts``, which runs each submission's code in a locked-down
sandbox and decides every test cell outside it (see exercises/coursetools/verdicts.py).
"""

import os

from coursetools.nbgrader_setup import configure

c = get_config()  # noqa: F821  (injected by traitlets)
configure(c, os.path.dirname(os.path.abspath(__file__)))
