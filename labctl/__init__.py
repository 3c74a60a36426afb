"""The lab launcher behind `./lab`: installs, starts, stops, inspects and tests the native lab.

It uses only the standard library, because it runs before the project's environment exists.
"""
