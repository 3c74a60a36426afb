"""``stress dashboard``: the run in progress, live in a browser, with its controls.

A Flask-SocketIO app. A feed thread finds the run through its control socket, asks to
``watch`` it, and pushes every second and event to the browsers as they come (nothing polls a
file); when no run is in progress the page shows the last run folder's figures. Controls
(stop, pause and resume devices, scale, rate) go to the run through the same socket as
``stress stop`` and its siblings.
"""
