import sys

from lib_replicheck.cli.main import main

sys.exit(main())
