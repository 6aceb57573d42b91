import sys

from runner.worker import main

sys.exit(main(sys.argv[1:]))
