import sys

from lib_replicheck.cli import main

sys.exit(main())
