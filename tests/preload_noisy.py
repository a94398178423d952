"""A module that prints as it is imported, through sys.stdout and straight to fd 1 (as C code
does): preloaded, neither line may reach stdout ('pool run' writes its JSON result lines there)."""

import os

print("preload_noisy: hello from print")
os.write(1, b"preload_noisy: hello from fd 1\n")
