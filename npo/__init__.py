"""NPO: learning which fault recommendations to surface from on-call engineers' structured feedback.

This package is the method itself, pure: numpy and the standard library only. Random generators and
"now" are passed in; nothing here reads files, the network, the clock or the environment.
"""

__version__ = "0.1.0"
