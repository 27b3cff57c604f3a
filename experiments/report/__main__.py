"""``python -m experiments.report``: the static results page (:mod:`experiments.report.page`)."""
import sys

from experiments.report.page import main

sys.exit(main())
