"""Every tier tests the working tree's library, not an older installed copy."""

import os
import sys

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib")
sys.path.insert(0, os.path.abspath(LIB))
