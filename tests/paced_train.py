"""`python tests/paced_train.py SECONDS <stage arguments>`: the `stage` CLI with a pause before every training
step, so that a test can stop a tiny run between two given steps instead of racing it."""

import sys
import time

import stage.train.loop as loop
from stage.cli import main

pause = float(sys.argv[1])
step_generator = loop.step_generator


def paced(*args, **kwargs):
    time.sleep(pause)
    return step_generator(*args, **kwargs)


loop.step_generator = paced
sys.exit(main(sys.argv[2:]))
