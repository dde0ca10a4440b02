"""The simulated PlanktoScope: disk (device.py), HTTP surface (web.py, filebrowser.py), SSH (ssh.py), process
(interface.py). See docs/targets/planktoscope.md."""
