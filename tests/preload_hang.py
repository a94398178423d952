"""A module whose import hangs (a network call at import time): preload= must not leave the
stuck supervisor behind when the pool gives up on it. Sleeps $IP_PRELOAD_HANG seconds (60)."""

import os
import time

time.sleep(float(os.environ.get("IP_PRELOAD_HANG", "60")))
