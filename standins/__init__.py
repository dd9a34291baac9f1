"""Local stand-ins for the outside services the portal drives, for tests and demos.

Each is a small imitation built from what is publicly known about the real service, runs on
loopback only, and says it is a stand-in in its docstring and in every log line. None of them
is Microsoft's (or anyone's) software, and passing against one proves the portal's side only.
"""
