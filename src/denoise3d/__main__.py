import sys

from denoise3d.cli import main

sys.exit(main())
