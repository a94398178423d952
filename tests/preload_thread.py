"""A module that starts a thread as it is imported: preload= must refuse it."""

import threading

_stop = threading.Event()
threading.Thread(target=_stop.wait, args=(30,), daemon=True, name="started-at-import").start()
