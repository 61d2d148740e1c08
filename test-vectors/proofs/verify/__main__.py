import sys

from .vectors import main

sys.exit(main())
