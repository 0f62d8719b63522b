"""python -m taylorism_zmq {boss,agent,ctl} ..."""

import sys

from .cli import main

sys.exit(main())
