"""A module that starts a non-daemon thread as it is imported (a background client, a metrics
pusher): preload= must refuse it, and the refusing supervisor must not wait for that thread."""

import threading

_stop = threading.Event()
threading.Thread(target=_stop.wait, args=(60,), name="non-daemon-at-import").start()
