"""``stress dashboard``: the run in progress, live in a browser, with its controls.

A Flask-SocketIO app. A feed thread finds the run through its control socket, asks to
``watch`` it, and pushes every second, event and change of the run's timeline to the browsers
as they come (nothing polls a file); when no run is in progress the page shows a finished run
whole from its folder (the last one, or the one ``--run`` names), with its errors, its timeline
and a link to its report. Controls (stop, pause and resume devices, scale, rate) go to the run
through the same socket as ``stress stop`` and its siblings.
"""
